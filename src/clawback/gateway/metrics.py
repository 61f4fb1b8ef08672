"""Prometheus metrics for ``GET /metrics``.

Each gateway app gets its own registry (tests run several apps in one process). Label sets are kept
small (model, key id, status class) so cardinality stays bounded by the number of keys and models.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector
from sqlalchemy import Engine

from clawback.api.usage import Usage
from clawback.pricing import usd
from clawback.storage.pool import pool_stats

__all__ = ["CONTENT_TYPE_LATEST", "GatewayMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


_TOKEN_KINDS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h")


@dataclass(slots=True)
class _Children:
    requests: Counter
    latency: Histogram
    tokens: tuple[Counter, ...]
    cost: Counter
    saved: Counter
    lost: Counter


class GatewayMetrics:
    def __init__(self) -> None:
        self._children: dict[tuple[str, str, str, int], _Children] = {}
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "clawback_requests", "Requests handled", ["endpoint", "model", "key", "status"], registry=self.registry
        )
        self.errors = Counter(
            "clawback_errors", "Requests that ended in an error", ["model", "key", "error_type"], registry=self.registry
        )
        self.latency = Histogram(
            "clawback_request_latency_seconds", "Time from request to last byte", ["endpoint", "model"],
            buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "clawback_tokens", "Tokens billed, by kind", ["model", "key", "kind"], registry=self.registry
        )
        self.cost = Counter("clawback_cost_usd", "Dollars billed (pricing module)", ["model", "key"],
                            registry=self.registry)  # fmt: skip
        self.saved = Counter("clawback_saved_usd", "Dollars saved against the counterfactual", ["model", "key"],
                             registry=self.registry)  # fmt: skip
        # A request's net saving can be negative (a prompt-cache write that never paid back); counters only grow,
        # so the loss has its own counter: net saving = saved - lost.
        self.lost = Counter("clawback_lost_usd", "Dollars an optimization cost above the counterfactual",
                            ["model", "key"], registry=self.registry)  # fmt: skip

    def observe(
        self,
        *,
        endpoint: str,
        model: str,
        key: str,
        status: int,
        error_type: str | None,
        seconds: float,
        usage: Usage,
        cost_micro_usd: int,
        saved_micro_usd: int,
    ) -> None:
        labels = (endpoint, model, key, status)
        children = self._children.get(labels)
        if children is None:
            # labels() takes a lock and builds a key on every call; resolve each child once per label set.
            children = _Children(
                requests=self.requests.labels(endpoint, model, key, str(status)),
                latency=self.latency.labels(endpoint, model),
                tokens=tuple(self.tokens.labels(model, key, kind) for kind in _TOKEN_KINDS),
                cost=self.cost.labels(model, key),
                saved=self.saved.labels(model, key),
                lost=self.lost.labels(model, key),
            )
            self._children[labels] = children
        children.requests.inc()
        children.latency.observe(seconds)
        if error_type:
            self.errors.labels(model, key, error_type).inc()
        counts = (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_write_5m_input_tokens,
            usage.cache_write_1h_input_tokens,
        )
        for child, count in zip(children.tokens, counts, strict=True):
            if count:
                child.inc(count)
        if cost_micro_usd:
            children.cost.inc(usd(cost_micro_usd))
        if saved_micro_usd > 0:
            children.saved.inc(usd(saved_micro_usd))
        elif saved_micro_usd < 0:
            children.lost.inc(usd(-saved_micro_usd))

    def watch_pool(self, engine: Engine) -> None:
        """Export the ledger database pool's statistics, read at each scrape (PostgreSQL; SQLite has none)."""
        self.registry.register(_PoolCollector(engine))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    """``clawback_db_pool_*``: size, open, in use, waiting (gauges); timeouts, errors, long holds (counters)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        stats = pool_stats(self.engine)
        if stats is None:
            return
        for name, value, what in (
            ("size", stats.size, "Connections the pool keeps open (ledger.pool_size)"),
            ("open", stats.open, "Connections open now"),
            ("in_use", stats.in_use, "Connections checked out now"),
            ("waiting", stats.waiting, "Threads waiting for a connection now"),
            ("max_held_seconds", stats.max_held_s, "Longest a connection was held"),
        ):
            yield GaugeMetricFamily(f"clawback_db_pool_{name}", what, value=value)
        for name, value, what in (
            ("timeouts", stats.timeouts, "Acquires that gave up after ledger.pool_timeout_s"),
            ("errors", stats.errors, "Acquires that failed (database refused or dropped the connection)"),
            ("held_too_long", stats.held_too_long, "Connections held longer than ledger.pool_held_warn_s"),
        ):
            yield CounterMetricFamily(f"clawback_db_pool_{name}", what, value=value)
