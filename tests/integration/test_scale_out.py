"""Scale-out under faults, against real PostgreSQL and Redis: pool exhaustion and recovery, a database restart in
the middle of a load through two gateway processes, Redis down and back.

The shared servers are never restarted: the restart drills run on a private cluster and a private
``redis-server`` (``clawback.bench.throwaway``), started and removed here; pool exhaustion uses a scratch
database on the shared server (as ``test_ledger_postgres.py``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from clawback.bench.throwaway import ThrowawayRedis, postgres_bin_dir
from clawback.config import Settings
from clawback.serving import BackgroundServer
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerReader
from clawback.storage.migrate import migrate
from tests.conftest import wait_for
from tests.integration.test_ledger_postgres import PgDatabase, _admin_engine

pytest.importorskip("psycopg")


@pytest.fixture
def scratch_pg() -> Iterator[str]:
    admin: Engine = _admin_engine()
    db = PgDatabase(admin)
    db.create()
    try:
        yield db.url_str
    finally:
        db.drop()
        admin.dispose()


def _post(url: str, secret: str, text_: str) -> httpx.Response:
    body = {
        "model": "claude-haiku-4-5", "max_tokens": 16, "temperature": 0,
        "messages": [{"role": "user", "content": text_}],
    }  # fmt: skip
    return httpx.post(f"{url}/v1/messages", json=body, headers={"x-api-key": secret}, timeout=30)


def _health(url: str) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{url}/healthz", timeout=10).json()
    return body


def test_pool_exhaustion_gives_a_clear_error_then_service_again(
    scratch_pg: str, simulator: BackgroundServer, sim_admin: httpx.Client, tmp_path: Path
) -> None:
    from clawback.gateway.app import create_gateway_app

    settings = Settings(
        exact_cache={"enabled": False}, prompt_cache={"enabled": False}, upstream={"url": simulator.url},
        ledger={"url": scratch_pg, "journal_path": str(tmp_path / "j.journal"), "flush_interval_s": 0.05,
                "pool_size": 1, "pool_max_overflow": 0, "pool_timeout_s": 0.3},
    )  # fmt: skip
    migrate(scratch_pg)
    keys = KeyStore(scratch_pg)
    _, secret = keys.create("pool-test")
    keys.engine.dispose()
    app = create_gateway_app(settings)
    with BackgroundServer(app) as gw:
        engine = app.gateway.engine
        held = engine.connect()  # the pool's only connection, taken before the key table was ever read
        refused = _post(gw.url, secret, "while the pool is empty")
        assert refused.status_code == 529
        error = refused.json()["error"]
        assert error["type"] == "overloaded_error"
        assert "ledger.pool_size" in error["message"] and "cannot be read" in error["message"]
        held.close()
        # Service again, as soon as the connection is back.
        assert all(_post(gw.url, secret, f"after release {i}").status_code == 200 for i in range(5))

        # Exhausted again, with the key table known: requests are still served; the ledger's writes wait 0.3 s,
        # give up with the error naming the setting, and journal.
        held = engine.connect()
        assert all(_post(gw.url, secret, f"while held {i}").status_code == 200 for i in range(5))
        health = wait_for(lambda: (h := _health(gw.url))["ledger"]["pool_timeouts"] >= 1 and h, timeout=10)
        assert health["status"] == "degraded"
        assert health["db_pool"]["timeouts"] >= 2 and health["db_pool"]["in_use"] == 1
        metrics = httpx.get(f"{gw.url}/metrics").text
        assert "clawback_db_pool_timeouts_total" in metrics and "clawback_db_pool_in_use 1.0" in metrics
        held.close()
        recovered = wait_for(
            lambda: (h := _health(gw.url))["status"] == "ok" and h["ledger"]["journal_pending"] == 0 and h,
            timeout=15,
        )
        assert recovered["ledger"]["replayed"] >= 1
    billed = sim_admin.get("/_simulator/requests").json()
    with LedgerReader(scratch_pg) as reader:
        rows = reader.rows()
    assert len(billed) == 10 == len(rows)
    assert sorted(r.upstream_request_id or "" for r in rows) == sorted(b["request_id"] for b in billed)
    assert sum(r.cost_micro_usd for r in rows) == sum(b["cost_micro_usd"] for b in billed)


@pytest.mark.skipif(postgres_bin_dir() is None, reason="no PostgreSQL server binaries (initdb/pg_ctl)")
def test_database_restart_mid_load_through_two_replicas_loses_and_doubles_nothing() -> None:
    from clawback.bench.replicas import run_replicas

    run = run_replicas(replicas=2, requests=240, concurrency=12, restart_db=True, log=lambda _line: None)
    report = run.report()
    assert report["db_restart_at_request"] == 120 and report["db_restart_s"] is not None
    assert report["client_ok"] == 240, report["client_errors"]
    # PostgreSQL was down 2 s under load: the writers saw it, journaled, and replayed everything afterwards.
    assert report["ledger_write_errors"] >= 1
    assert report["ledger_journaled"] == report["ledger_replayed"] >= 1
    assert report["simulator_billed"] == report["ledger_rows"] == 240
    assert report["ledger_missing"] == report["ledger_duplicates"] == report["ledger_unmatched"] == 0
    assert report["ledger_cost_micro_usd"] == report["simulator_cost_micro_usd"] > 0
    assert report["journal_left"] == 0 and report["ok"]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server")
def test_redis_down_and_back_keeps_serving_through_the_one_switch(
    simulator: BackgroundServer, sim_admin: httpx.Client, tmp_path: Path
) -> None:
    from clawback.gateway.app import create_gateway_app

    with ThrowawayRedis() as redis_server:
        settings = Settings(
            prompt_cache={"enabled": False}, upstream={"url": simulator.url}, redis={"url": redis_server.url},
            gateway={"require_key": False},
            ledger={"url": f"sqlite:///{tmp_path / 'l.db'}", "journal_path": str(tmp_path / "j.journal")},
        )  # fmt: skip
        assert settings.exact_cache.backend == "redis" and settings.exact_cache.redis_url == redis_server.url
        assert settings.pruning.summary_store == "redis"
        app = create_gateway_app(settings)

        def twice(label: str) -> list[str]:
            statuses = []
            for _ in range(2):
                reply = _post(gw.url, "", f"same question {label}")
                assert reply.status_code == 200
                statuses.append(reply.headers.get("x-clawback-cache", "miss"))
                time.sleep(0.3)  # the cache fill is written after the reply
            return statuses

        with BackgroundServer(app) as gw:
            assert twice("before") == ["miss", "hit"]
            redis_server.stop()
            assert twice("while down") == ["miss", "miss"]  # served, uncached
            redis_server.start()
            time.sleep(1.2)  # the breaker stays open for 1 s after the last failure
            assert wait_for(lambda: twice(f"after {time.monotonic()}") == ["miss", "hit"], timeout=10)
        calls = len(sim_admin.get("/_simulator/requests").json())
        assert calls >= 4  # before: 1, while down: 2, after: at least 1


def test_the_connection_arithmetic_refuses_to_start() -> None:
    """(pool_size + max_overflow) x workers x replicas against the shared server's own max_connections."""
    from clawback.config import ConfigError
    from clawback.gateway.process import Gateway

    admin = _admin_engine()
    with admin.connect() as conn:
        limit = int(conn.execute(text("SHOW max_connections")).scalar_one())
    url = admin.url.render_as_string(hide_password=False)
    admin.dispose()
    settings = Settings(
        upstream={"url": "http://127.0.0.1:9"}, ledger={"url": url, "pool_size": 10, "pool_max_overflow": 0},
        gateway={"workers": 4, "replicas": limit // 40 + 1},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"x 4 worker\(s\) \(gateway.workers\) x \d+ replica\(s\)"):
        Gateway.from_settings(settings)
