"""A flag change reaches three running gateway processes within 5 seconds, without a restart: through Redis
pub/sub when it is configured, through the periodic refresh when it is not. Real processes (``clawback serve``),
one PostgreSQL scratch database (the shared ledger), the real Redis on a channel of this test's own."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clawback.config import SimulatorSettings
from clawback.serving import BackgroundServer, free_port
from clawback.storage.flags import FlagStore, FlagUpdate
from clawback.storage.migrate import migrate
from clawback.upstream.simulator.app import create_simulator_app
from tests.conftest import redis_up
from tests.integration.test_ledger_postgres import PgDatabase, _admin_engine

TOKEN = "admin-secret-14"


@pytest.fixture
def pg() -> Iterator[PgDatabase]:
    admin = _admin_engine()
    db = PgDatabase(admin)
    db.create()
    try:
        yield db
    finally:
        db.drop()
        admin.dispose()


def start_gateways(
    count: int, env: dict[str, str], upstream: str, tmp: Path
) -> list[tuple[subprocess.Popen[bytes], str]]:
    cli = [sys.executable, "-m", "clawback"]
    out = []
    for i in range(count):
        port = free_port()
        penv = {**env, "CLAWBACK_LEDGER__JOURNAL_PATH": str(tmp / f"journal-{i}")}
        proc = subprocess.Popen([*cli, "serve", "--port", str(port), "--upstream", upstream], env=penv)
        out.append((proc, f"http://127.0.0.1:{port}"))
    deadline = time.monotonic() + 60
    for proc, url in out:
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, "a gateway exited"
            assert time.monotonic() < deadline, "gateways did not start"
            time.sleep(0.2)
    return out


def mode_at(url: str, name: str) -> str:
    flags = httpx.get(f"{url}/admin/flags", headers={"authorization": f"Bearer {TOKEN}"}, timeout=2).json()
    return str(flags["flags"][name]["mode"])


def time_to_reach(urls: list[str], store: FlagStore, update: FlagUpdate, timeout: float = 10.0) -> list[float]:
    """Seconds from the change (written and announced) until each gateway's admin API shows it."""
    seen: dict[str, float] = {}

    def watch(url: str, started: float) -> None:
        while time.monotonic() - started < timeout:
            if mode_at(url, update.name) == update.mode:
                seen[url] = time.monotonic() - started
                return
            time.sleep(0.02)

    started = time.monotonic()
    store.apply([update], actor="test", reason="fan-out")
    threads = [threading.Thread(target=watch, args=(url, started)) for url in urls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(seen) == set(urls), f"not every replica saw the change within {timeout} s: {seen}"
    return [seen[url] for url in urls]


@pytest.mark.parametrize("via", ["redis", "refresh"])
def test_a_flag_change_reaches_three_gateway_processes_within_5_seconds(pg: PgDatabase, tmp_path: Path, via: str):
    if via == "redis" and not redis_up():
        pytest.fail("Redis is not running on 127.0.0.1:6379 (scripts/install.sh starts it)")
    migrate(pg.url_str)
    channel = f"clawback-test-14:{secrets.token_hex(4)}"
    env = {**os.environ, "CLAWBACK_LEDGER__URL": pg.url_str, "CLAWBACK_GATEWAY__ADMIN_TOKEN": TOKEN,
           "CLAWBACK_GATEWAY__REQUIRE_KEY": "false", "CLAWBACK_FLAGS__REDIS_CHANNEL": channel,
           # refresh only: the default period; with Redis a long one, so that only the announcement can be in time
           "CLAWBACK_FLAGS__REFRESH_S": "1" if via == "refresh" else "60"}  # fmt: skip
    redis_url = "redis://127.0.0.1:6379/0" if via == "redis" else None
    if redis_url:
        env["CLAWBACK_FLAGS__REDIS_URL"] = redis_url
    with BackgroundServer(create_simulator_app(SimulatorSettings())) as simulator:
        gateways = start_gateways(3, env, simulator.url, tmp_path)
        store = FlagStore(pg.url_str, redis_url=redis_url, channel=channel)
        try:
            urls = [url for _, url in gateways]
            assert {mode_at(url, "exact_cache") for url in urls} == {"on"}  # the configured start
            time.sleep(1.5)  # the subscriptions are up (a gateway subscribes once started)
            delays = time_to_reach(urls, store, FlagUpdate("exact_cache", "shadow", 100))
            delays += time_to_reach(urls, store, FlagUpdate("exact_cache", "off", 100))
            print(f"\n{via}: a change reached each of 3 gateways after " + ", ".join(f"{d:.2f}" for d in delays) + " s")
            assert max(delays) < 5.0
            if via == "redis":
                assert max(delays) < 1.0  # the announcement, not the 60 s refresh
        finally:
            store.close()
            for proc, _ in gateways:
                proc.terminate()
            for proc, _ in gateways:
                proc.wait(timeout=20)
