"""Budget alerts: soft thresholds and run-rate forecasts, once per window, to the log, /metrics and a webhook.

Alerts are judged on *settled* spend, right after each settle, never on reservations: a burst of requests in
flight reserves far more than it will cost, and alerting on it would be a false alarm. Each alert is claimed
in the counter store first (``SET NX`` in Redis), so four replicas crossing 80 % together send one alert, not
four. The webhook gets a Slack-compatible payload (``text``) plus the figures under ``clawback``, with
retries and exponential backoff; every alert is kept in ``budget_alerts`` with whether it was delivered.

A forecast alert fires when the window is at least ``budgets.forecast_min_elapsed`` old and its run rate
(settled spend / time elapsed) would reach the limit before the window ends; calendar windows only (a rolling
window has no end to forecast to).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Gauge

from clawback.config import BudgetSettings
from clawback.pipeline.budget.plan import Applicable
from clawback.pricing import from_micro_usd
from clawback.storage.budget_counters import CounterStore, CounterStoreUnavailable, CounterUsage
from clawback.storage.budgets import BudgetStore

__all__ = ["Alert", "Alerts", "BudgetMetrics"]

log = logging.getLogger("clawback.budget")


class BudgetMetrics:
    """The budget stage's series; rendered with the gateway's own on ``/metrics``."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.alerts = Counter("clawback_budget_alerts", "Budget alerts raised", ["budget", "kind"],
                              registry=self.registry)  # fmt: skip
        self.refused = Counter("clawback_budget_refused", "Requests refused by a budget", ["budget", "reason"],
                               registry=self.registry)  # fmt: skip
        self.fail_open = Counter("clawback_budget_fail_open", "Requests let through with the counters unreachable",
                                 ["budget"], registry=self.registry)  # fmt: skip
        self.downgraded = Counter("clawback_budget_downgraded", "Requests downgraded to fit a budget", ["budget"],
                                  registry=self.registry)  # fmt: skip
        self.webhook_failures = Counter("clawback_budget_webhook_failures", "Alert deliveries that failed for good",
                                        registry=self.registry)  # fmt: skip
        self.drift = Gauge("clawback_budget_drift_usd", "Counter minus ledger spend in the current window (last "
                           "reconciliation)", ["budget"], registry=self.registry)  # fmt: skip
        self.spent = Gauge("clawback_budget_spent_usd", "Settled spend in the current window (last reconciliation)",
                           ["budget"], registry=self.registry)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str  # "threshold" | "forecast"
    threshold: int | None
    applicable: Applicable
    spent_micro_usd: int
    spent_tokens: int
    percent: float
    at: float

    def text(self) -> str:
        budget, window = self.applicable.budget, self.applicable.window
        what = f"{self.threshold} %" if self.kind == "threshold" else "its limit before the window ends (forecast)"
        scope = "the organisation" if budget.scope == "org" else f"{budget.scope} {self.applicable.value}"
        return (f"clawback budget '{budget.name}' ({scope}) reached {what}: {self.percent:.1f} % used "
                f"(${from_micro_usd(self.spent_micro_usd)} / {self.spent_tokens} tokens) in the {window.label}; "
                f"resets {window.end.isoformat()}")  # fmt: skip

    def payload(self) -> dict[str, Any]:
        budget, window = self.applicable.budget, self.applicable.window
        limit_micro, limit_tokens, _ = budget.limits(datetime.fromtimestamp(self.at, UTC))
        return {
            "text": self.text(),
            "clawback": {
                "budget_id": budget.id, "budget": budget.name, "scope": budget.scope,
                "scope_value": self.applicable.value, "kind": self.kind, "threshold": self.threshold,
                "percent": round(self.percent, 3), "spent_usd": str(from_micro_usd(self.spent_micro_usd)),
                "spent_tokens": self.spent_tokens,
                "limit_usd": None if limit_micro is None else str(from_micro_usd(limit_micro)),
                "limit_tokens": limit_tokens, "window": window.label, "window_start": window.start.isoformat(),
                "resets_at": window.end.isoformat(), "raised_at": self.at,
            },
        }  # fmt: skip


def _percent(used: int, limit: int | None) -> float:
    if limit is None:
        return 0.0
    return float("inf") if limit == 0 else 100.0 * used / limit


class Alerts:
    def __init__(self, settings: BudgetSettings, counters: CounterStore, store: BudgetStore,
                 metrics: BudgetMetrics) -> None:  # fmt: skip
        self.settings = settings
        self.counters = counters
        self.store = store
        self.metrics = metrics
        self._claimed: set[str] = set()
        self._client: httpx.AsyncClient | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    async def check(self, applicable: Applicable, usage: CounterUsage, now: datetime) -> None:
        """Raise what the settled ``usage`` of one budget window newly crosses."""
        budget, window = applicable.budget, applicable.window
        limit_micro, limit_tokens, _ = budget.limits(now)
        percent = max(_percent(usage.spent_micro_usd, limit_micro), _percent(usage.spent_tokens, limit_tokens))
        wanted: list[tuple[str, int | None]] = [("threshold", t) for t in budget.thresholds if percent >= t]
        if budget.forecast and not window.rolling and 0 < percent < 100:
            share = window.elapsed_share(now)
            if share >= self.settings.forecast_min_elapsed and percent / share >= 100:
                wanted.append(("forecast", None))
        for kind, threshold in wanted:
            marker = f"{applicable.cid}:{window.key}:{kind}:{threshold}"
            if marker in self._claimed:
                continue
            try:
                first = await self.counters.claim(marker, window.ttl_s)
            except CounterStoreUnavailable:
                continue  # judged again on the next settle
            self._claimed.add(marker)
            if first:
                self._raise(Alert(kind, threshold, applicable, usage.spent_micro_usd, usage.spent_tokens, percent,
                                  time.time()))  # fmt: skip

    def _raise(self, alert: Alert) -> None:
        log.warning("%s", alert.text())
        self.metrics.alerts.labels(alert.applicable.budget.name, alert.kind).inc()
        task = asyncio.get_running_loop().create_task(self._deliver(alert))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def _deliver(self, alert: Alert) -> None:
        delivered = False
        url = self.settings.webhook_url
        if url is not None:
            if self._client is None:
                self._client = httpx.AsyncClient(timeout=self.settings.webhook_timeout_s)
            for attempt in range(self.settings.webhook_attempts):
                try:
                    response = await self._client.post(url, json=alert.payload())
                    if response.status_code < 300:
                        delivered = True
                        break
                    problem = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    problem = str(exc) or type(exc).__name__
                if attempt + 1 < self.settings.webhook_attempts:
                    await asyncio.sleep(min(0.5 * 2**attempt, 30.0))
            else:
                self.metrics.webhook_failures.inc()
                log.error("budget alert not delivered to %s after %d attempts (%s)", url,
                          self.settings.webhook_attempts, problem)  # fmt: skip
        try:
            await asyncio.to_thread(
                self.store.record_alert, budget_id=alert.applicable.budget.id, scope_value=alert.applicable.value,
                window_start=alert.applicable.window.start, kind=alert.kind, threshold=alert.threshold,
                spent_micro_usd=alert.spent_micro_usd, spent_tokens=alert.spent_tokens, delivered=delivered,
            )  # fmt: skip
        except Exception:
            log.exception("budget alert: cannot record it in the database")

    async def aclose(self) -> None:
        if self._deliveries:
            await asyncio.wait(self._deliveries, timeout=self.settings.webhook_timeout_s)
        if self._client is not None:
            await self._client.aclose()
