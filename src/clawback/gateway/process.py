"""Everything one gateway process holds: built from ``Settings`` at start-up, closed at shutdown."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from sqlalchemy import Engine
from starlette.requests import Request

from clawback.api.usage import Usage
from clawback.config import ANTHROPIC_API_URL, ConfigError, Settings
from clawback.front.assembly import assemble, open_ledger
from clawback.front.auth import Authenticator
from clawback.front.intake import Intake
from clawback.gateway.metrics import GatewayMetrics
from clawback.pipeline.forward import Forwarder
from clawback.pipeline.stage import Pipeline
from clawback.pricing import PriceBook
from clawback.storage.engine import engine_from_settings
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerRecord, LedgerWriter
from clawback.storage.pool import connection_budget_error
from clawback.upstream.client import UpstreamClient

__all__ = ["SIMULATOR_KEY", "Gateway", "gateway_of", "resolve_upstream"]

SIMULATOR_KEY = "sk-clawback-simulator"


def resolve_upstream(settings: Settings) -> tuple[str, str | None]:
    """The upstream URL and the key the gateway sends there.

    No URL and ``ANTHROPIC_API_KEY`` set: the real API. No URL and no key: a start-up error that says what
    to do. An explicit URL without a key (the simulator): a placeholder key, which the simulator accepts.
    """
    configured_key = settings.upstream.api_key.get_secret_value() if settings.upstream.api_key else None
    env_key = os.environ.get("ANTHROPIC_API_KEY") or None
    key = configured_key or env_key
    if settings.upstream.url:
        return settings.upstream.url, key or SIMULATOR_KEY
    if key:
        return ANTHROPIC_API_URL, key
    raise ConfigError(
        "no upstream: pass --upstream URL (for example the simulator: clawback simulate, then "
        "--upstream http://127.0.0.1:8788) or set ANTHROPIC_API_KEY to use the real Anthropic API"
    )


@dataclass
class Gateway:
    settings: Settings
    upstream_url: str
    upstream: UpstreamClient
    forward: Forwarder
    pipeline: Pipeline
    intake: Intake
    ledger: LedgerWriter
    metrics: GatewayMetrics
    price_book: PriceBook
    engine: Engine
    """The process's pool for the ledger database (the ledger writer and the key table); closed last."""
    results_url: re.Pattern[bytes] = field(init=False)
    """A batch's ``results_url`` as the upstream writes it (the passthrough route rewrites it to ours)."""

    def __post_init__(self) -> None:
        self.results_url = re.compile(rb'("results_url"\s*:\s*")' + re.escape(self.upstream_url.rstrip("/").encode()))

    @classmethod
    def from_settings(cls, settings: Settings, price_book: PriceBook | None = None) -> Gateway:
        upstream_url, upstream_key = resolve_upstream(settings)
        # One pool per process for the ledger database, shared by the writer and the key table, so that the
        # connection arithmetic (pool x workers x replicas) is the whole story; checked before anything else.
        engine = engine_from_settings(settings.ledger)
        error = connection_budget_error(
            engine, per_process=settings.ledger.pool_size + settings.ledger.pool_max_overflow,
            workers=settings.gateway.workers, replicas=settings.gateway.replicas,
        )  # fmt: skip
        if error is not None:
            engine.dispose()
            raise ConfigError(error)
        ledger = open_ledger(settings.ledger, engine)
        keys = KeyStore(engine)
        metrics = GatewayMetrics()
        client = UpstreamClient(upstream_url, settings.upstream)
        forward = Forwarder(client)

        def observe(record: LedgerRecord) -> None:
            metrics.observe(
                endpoint=record.endpoint, model=record.model, key=record.key_id or "-", status=record.status,
                error_type=record.error_type, seconds=record.latency_ms / 1000,
                usage=_usage_of(record), cost_micro_usd=record.cost_micro_usd,
                saved_micro_usd=record.saved_micro_usd,
            )  # fmt: skip

        built = assemble(
            settings, terminal=forward, ledger=ledger, sinks=[observe], price_book=price_book, engine=engine
        )
        intake = Intake(Authenticator(settings.gateway, keys, upstream_key))
        metrics.watch_pool(engine)
        return cls(settings, upstream_url, client, forward, built.pipeline, intake, ledger, metrics, built.price_book,
                   engine)  # fmt: skip

    async def start(self) -> None:
        await self.ledger.start()

    async def aclose(self) -> None:
        await self.pipeline.aclose()
        await self.upstream.aclose()
        await self.ledger.aclose()
        self.engine.dispose()


def gateway_of(request: Request) -> Gateway:
    """The gateway serving ``request`` (``create_gateway_app`` puts it in the app's state)."""
    gateway: Gateway = request.app.state.gateway
    return gateway


def _usage_of(record: LedgerRecord) -> Usage:
    return Usage(record.input_tokens, record.output_tokens, record.cache_read_input_tokens,
                 record.cache_write_5m_input_tokens, record.cache_write_1h_input_tokens)  # fmt: skip
