"""``clawback health`` against a real stack: the simulator and a gateway over HTTP, SQLite or PostgreSQL, Redis.

Healthy: exit 0. Upstream or database down: exit 1 with the part named. Every part is real: nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from clawback.cli import app
from clawback.config import Settings
from clawback.serving import BackgroundServer, free_port


def _config(tmp_path: Path, settings: Settings, **changes: Any) -> Path:
    data: dict[str, Any] = {
        "upstream": {"url": settings.upstream.url},
        "ledger": {"url": settings.ledger.url, "journal_path": settings.ledger.journal_path},
        "exact_cache": {"backend": "redis", "redis_prefix": "clawback-test-health15:"},
    }
    for section, values in changes.items():
        data.setdefault(section, {}).update(values)
    path = tmp_path / "clawback.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, ["health", "--json", *args])
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    return result.exit_code, orjson.loads(lines[-1]) if lines else {}, result.output


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis(socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def stack(gateway: BackgroundServer, gateway_settings: Settings, gateway_key: str) -> tuple[BackgroundServer, Settings]:
    import httpx

    # one request so that the ledger has a row and the gateway's writer has written
    body = {"model": "claude-haiku-4-5", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}
    httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": gateway_key}, json=body, timeout=10)
    return gateway, gateway_settings


def test_healthy_stack_exits_zero(stack: tuple[BackgroundServer, Settings], tmp_path: Path) -> None:
    if not _redis_up():
        pytest.skip("no Redis on 127.0.0.1:6379")
    gateway, settings = stack
    code, report, output = _run("--config", str(_config(tmp_path, settings)), "--gateway", gateway.url)
    assert code == 0, output
    status = {c["part"]: c["status"] for c in report["checks"]}
    assert status["upstream"] == status["ledger database"] == status["redis"] == status["gateway"] == "ok", status
    gateway_check = next(c for c in report["checks"] if c["part"] == "gateway")
    assert gateway_check["figures"]["ledger"]["journal_pending"] == 0
    assert gateway_check["figures"]["ledger"]["pool_timeouts"] == 0 and "db_pool" in gateway_check["figures"]
    redis_check = next(c for c in report["checks"] if c["part"] == "redis")
    assert redis_check["figures"]["exact_cache"]["connected_clients"] >= 1
    table = CliRunner().invoke(app, ["health", "--config", str(_config(tmp_path, settings)), "--gateway", gateway.url])
    assert table.exit_code == 0 and "ledger database" in table.stdout


def test_upstream_down_is_named(stack: tuple[BackgroundServer, Settings], tmp_path: Path) -> None:
    gateway, settings = stack
    dead = f"http://127.0.0.1:{free_port()}"
    config = _config(tmp_path, settings, upstream={"url": dead}, exact_cache={"backend": "memory"})
    code, report, output = _run("--config", str(config), "--gateway", gateway.url, "--timeout", "1")
    assert code == 1
    assert report["down"] == ["upstream"]
    assert "DOWN" in output and "upstream" in output


def test_database_down_is_named(stack: tuple[BackgroundServer, Settings], tmp_path: Path) -> None:
    _, settings = stack
    missing = f"sqlite:///{tmp_path / 'nowhere' / 'ledger.db'}"
    config = _config(tmp_path, settings, ledger={"url": missing}, exact_cache={"backend": "memory"})
    code, report, output = _run("--config", str(config), "--no-gateway")
    assert code == 1 and report["down"] == ["ledger database"], output
    assert not (tmp_path / "nowhere").exists()  # the check created nothing
    pg_gone = "postgresql+psycopg://postgres@127.0.0.1:5432/clawback_health15_no_such_db"
    config = _config(tmp_path, settings, ledger={"url": pg_gone}, exact_cache={"backend": "memory"})
    code, report, output = _run("--config", str(config), "--no-gateway", "--timeout", "2")
    assert code == 1 and report["down"] == ["ledger database"], output
    assert "clawback_health15_no_such_db" in output


def test_gateway_unreachable_is_named(stack: tuple[BackgroundServer, Settings], tmp_path: Path) -> None:
    _, settings = stack
    config = _config(tmp_path, settings, exact_cache={"backend": "memory"})
    code, report, _ = _run("--config", str(config), "--gateway", f"http://127.0.0.1:{free_port()}", "--timeout", "1")
    assert code == 1 and report["down"] == ["gateway"]
