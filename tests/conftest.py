"""Shared fixtures: a real simulator and a real gateway, each on its own port, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clawback.config import Settings, SimulatorSettings
from clawback.serving import BackgroundServer
from clawback.upstream.simulator.app import create_simulator_app


@pytest.fixture
def simulator_settings() -> SimulatorSettings:
    return SimulatorSettings(seed=7, batch_processing_s=0.2)


@pytest.fixture
def simulator(simulator_settings: SimulatorSettings) -> Iterator[BackgroundServer]:
    with BackgroundServer(create_simulator_app(simulator_settings)) as server:
        yield server


@pytest.fixture
def sim_admin(simulator: BackgroundServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=simulator.url) as client:
        yield client


@pytest.fixture
def gateway_settings(tmp_path: Path, simulator: BackgroundServer) -> Settings:
    # The foundation tests check pass-through forwarding and billing: every optimization stage off (each
    # stage's own tests turn it on); dispatch stays on but makes one attempt, so upstream errors reach the
    # client as they came (its own tests retry).
    return Settings(
        dispatch={"max_attempts": 1},
        exact_cache={"enabled": False},
        prompt_cache={"enabled": False},
        pruning={"enabled": False},
        upstream={"url": simulator.url},
        ledger={
            "url": f"sqlite:///{tmp_path / 'ledger.db'}",
            "journal_path": str(tmp_path / "ledger.journal"),
            "flush_interval_s": 0.05,
        },
    )


@pytest.fixture
def gateway(gateway_settings: Settings) -> Iterator[BackgroundServer]:
    from clawback.gateway.app import create_gateway_app

    app = create_gateway_app(gateway_settings)
    with BackgroundServer(app) as server:
        server.app = app  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def gateway_key(gateway: BackgroundServer, gateway_settings: Settings) -> str:
    from clawback.storage.keys import KeyStore

    _, secret = KeyStore(gateway_settings.ledger.url).create("tests", {"team": "sales", "feature": "lead-chat"})
    return secret


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll until ``predicate()`` is truthy; return its value or fail the test."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(interval)


def redis_up() -> bool:
    """Whether the Redis the tests use (127.0.0.1:6379, started by scripts/install.sh) answers."""
    import redis

    try:
        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_timeout=0.2).ping())
    except redis.RedisError:
        return False
