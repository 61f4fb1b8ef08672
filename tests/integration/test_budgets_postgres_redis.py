"""Budgets shared by two gateway replicas on real PostgreSQL (a scratch database of this test's own) and real
Redis (a key prefix of its own), managed with the ``clawback budgets`` commands: concurrent load through both
replicas never overshoots, and the counters equal the ledger to the micro-dollar."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from clawback.cli import app as cli
from clawback.config import BudgetSettings, Settings, SimulatorSettings
from clawback.pricing import from_micro_usd
from clawback.serving import BackgroundServer
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerReader
from clawback.storage.migrate import migrate
from tests.conftest import redis_up, wait_for
from tests.integration.test_budgets_gateway import _load, worst_micro
from tests.integration.test_ledger_postgres import PgDatabase, _admin_engine

runner = CliRunner()


@pytest.fixture
def simulator_settings() -> SimulatorSettings:
    return SimulatorSettings(seed=11, error_rate_500=0.1, stream_drop_rate=0.1, ttft_ms=20, per_token_ms=1)


@pytest.fixture
def pg() -> Iterator[PgDatabase]:
    admin = _admin_engine()
    database = PgDatabase(admin)
    database.create()
    try:
        yield database
    finally:
        database.drop()
        admin.dispose()


@pytest.fixture
def prefix() -> Iterator[str]:
    if not redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    value = f"cbtest:budgets:{uuid.uuid4().hex[:8]}:"
    yield value
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = list(client.scan_iter(match=value + "*"))
    if keys:
        client.delete(*keys)


@pytest.fixture
def replicas(pg: PgDatabase, prefix: str, simulator: BackgroundServer, tmp_path: Path) -> Iterator[list[Any]]:
    from clawback.gateway.app import create_gateway_app

    migrate(pg.url_str)
    servers = []
    for i in range(2):
        settings = Settings(
            exact_cache={"enabled": False}, prompt_cache={"enabled": False}, pruning={"enabled": False},
            upstream={"url": simulator.url}, gateway={"admin_token": "admin-secret"},
            ledger={"url": pg.url_str, "journal_path": str(tmp_path / f"j{i}"), "flush_interval_s": 0.05},
            budgets=BudgetSettings(backend="redis", redis_prefix=prefix, estimate_margin=0.1, refresh_s=0.2),
        )  # fmt: skip
        servers.append(BackgroundServer(create_gateway_app(settings)).start())
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


def budgets(*args: str, url: str) -> Any:
    result = runner.invoke(cli, ["budgets", *args, "--url", url, "--admin-token", "admin-secret"])
    assert result.exit_code == 0, result.output
    return result.output


def test_replicas_share_one_budget_on_postgres_and_redis(replicas, pg) -> None:  # type: ignore[no-untyped-def]
    one, two = (s.url for s in replicas)
    key, secret = KeyStore(pg.url_str).create("team-a", {"team": "alpha"})
    limit = 15 * worst_micro()
    budgets("create", "alpha-daily", "--scope", "team", "--value", "alpha", "--usd", str(from_micro_usd(limit)),
            "--window", "day", "--threshold", "50", "--actor", "ops-bot", url=one)  # fmt: skip
    assert "alpha-daily" in budgets("list", url=two)  # the other replica reads the same database

    async def both() -> list[int]:
        first, second = await asyncio.gather(_load(one, secret, 60, 30), _load(two, secret, 60, 30))
        return first + second

    statuses = asyncio.run(both())
    assert 200 in statuses and 429 in statuses
    with LedgerReader(pg.url_str) as reader:
        rows = wait_for(lambda: (r := [x for x in reader.rows() if x.endpoint == "messages"]) and len(r) >= 120 and r,
                        timeout=20)  # fmt: skip
    booked = sum(r.cost_micro_usd for r in rows)
    assert 0 < booked <= limit
    shown: dict[str, Any] = {}

    def settled() -> bool:
        shown.update(orjson.loads(budgets("show", "alpha-daily", "--json", url=two)))
        return shown["usage"][0]["reservations"] == 0

    wait_for(settled, timeout=10)
    usage = shown["usage"][0]
    assert (usage["spent_micro_usd"], usage["ledger_micro_usd"], usage["drift_micro_usd"]) == (booked, booked, 0)
    # Change, override and delete, each audited in PostgreSQL.
    budgets("set", "alpha-daily", "--usd", "1", "--reason", "more traffic", "--actor", "carol", url=two)
    budgets("override", "alpha-daily", "--for", "1h", "--lift", "--reason", "quarter close", "--actor", "dave", url=one)
    assert "quarter close" in budgets("show", "alpha-daily", url=one)
    budgets("delete", "alpha-daily", "--reason", "team merged", "--actor", "dave", url=one)
    with pg_engine(pg) as conn:
        trail = conn.execute(text("SELECT action, actor, reason FROM budget_audit ORDER BY id")).all()
    assert [tuple(row) for row in trail] == [
        ("create", "ops-bot", None),
        ("set", "carol", "more traffic"),
        ("override", "dave", "quarter close"),
        ("delete", "dave", "team merged"),
    ]
    assert key.id


def pg_engine(pg: PgDatabase) -> Any:
    from clawback.storage.engine import make_engine

    return make_engine(pg.url_str).connect()
