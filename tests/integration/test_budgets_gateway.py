"""Budgets through the gateway in embedded mode (counters in the process, no Redis at all) against the
simulator over real HTTP: the 429 a refusal gets, no overshoot under concurrent load with failures and client
disconnects, counters equal to the ledger, downgrades, overrides that expire on time with their audit trail,
webhook alerts, and fail-open / fail-closed when the counter store is unreachable."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import anthropic
import httpx
import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clawback.config import BudgetSettings, SimulatorSettings
from clawback.pipeline.budget import worst_case
from clawback.pricing import from_micro_usd, load_price_book
from clawback.serving import BackgroundServer
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerReader
from tests.conftest import wait_for

MODEL = "claude-sonnet-4-6"
ADMIN = {"authorization": "Bearer admin-secret", "x-clawback-actor": "alice"}
ASK: dict[str, Any] = {
    "model": MODEL,
    "max_tokens": 200,
    "messages": [{"role": "user", "content": "Any flats near the park?"}],
}
MARGIN = 0.1


def worst_micro(body: dict[str, Any] = ASK) -> int:
    return worst_case(load_price_book(), body, MARGIN).micro_usd


@pytest.fixture
def gateway_settings(gateway_settings, budget_settings):  # type: ignore[no-untyped-def]
    gateway = gateway_settings.gateway.model_copy(update={"admin_token": SecretStr("admin-secret")})
    return gateway_settings.model_copy(update={"gateway": gateway, "budgets": budget_settings})


@pytest.fixture
def admin(gateway):  # type: ignore[no-untyped-def]
    with httpx.Client(base_url=gateway.url, headers=ADMIN, timeout=30) as client:
        yield client


@pytest.fixture
def key_id(gateway_key, gateway_settings) -> str:  # type: ignore[no-untyped-def]
    key = KeyStore(gateway_settings.ledger.url).lookup(gateway_key)
    assert key is not None
    return key.id


def create(admin: httpx.Client, **spec: Any) -> dict[str, Any]:
    response = admin.post("/admin/budgets", json={"name": "b", "window": "day", **spec})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def ledger_rows(gateway, count: int) -> list[Any]:  # type: ignore[no-untyped-def]
    with LedgerReader(gateway.app.gateway.settings.ledger.url) as reader:
        return wait_for(lambda: (rows := [r for r in reader.rows() if r.endpoint == "messages"]) and
                        len(rows) >= count and rows)  # fmt: skip


def usage_of(admin: httpx.Client, name: str) -> dict[str, Any]:
    shown = admin.get(f"/admin/budgets/{name}")
    assert shown.status_code == 200, shown.text
    return shown.json()["usage"][0]  # type: ignore[no-any-return]


def test_refusal_is_an_anthropic_429_the_sdk_does_not_retry(gateway, gateway_key, admin, key_id) -> None:  # type: ignore[no-untyped-def]
    limit = 3 * worst_micro()
    create(admin, name="sales-daily", scope="key", scope_value=key_id, limit_usd=str(from_micro_usd(limit)))
    sent = 0
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}, timeout=30) as http:
        while sent < 100:
            response = http.post("/v1/messages", json=ASK)
            sent += 1
            if response.status_code != 200:
                break
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false" and "retry-after" not in response.headers
    error = response.json()["error"]
    assert error["type"] == "rate_limit_error"
    assert "sales-daily" in error["message"] and "day 20" in error["message"] and "resets" in error["message"]
    assert error["details"]["error_code"] == "clawback_budget_exceeded"
    rows = ledger_rows(gateway, sent)
    booked = sum(r.cost_micro_usd for r in rows)
    assert booked <= limit  # never overshoots...
    assert booked + worst_micro() > limit  # ...and refused only once the worst case no longer fitted
    assert rows[-1].budget_status == "refused" and rows[-1].status == 429
    assert {r.budget_status for r in rows[:-1]} == {"reserved"}
    # The official SDK (2 retries by default) makes one attempt: x-should-retry: false.
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway_key, max_retries=2)
    with pytest.raises(anthropic.RateLimitError):
        client.messages.create(**ASK)
    assert len(ledger_rows(gateway, sent + 1)) == sent + 1
    time.sleep(0.5)
    assert len(ledger_rows(gateway, sent + 1)) == sent + 1
    usage = usage_of(admin, "sales-daily")
    assert (usage["spent_micro_usd"], usage["ledger_micro_usd"], usage["drift_micro_usd"]) == (booked, booked, 0)
    assert usage["reservations"] == 0


async def _load(url: str, key: str, count: int, concurrency: int) -> list[int]:
    """Mixed load: JSON and streams, a third of the streams abandoned after their first chunk."""
    statuses: list[int] = []
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=60) as http:

        async def one(i: int) -> None:
            body = {**ASK, "max_tokens": 100 + 37 * (i % 9), "stream": i % 2 == 0,
                    "messages": [{"role": "user", "content": f"Request {i}: " + "flat " * (i % 13)}]}  # fmt: skip
            async with gate:
                if not body["stream"]:
                    statuses.append((await http.post("/v1/messages", json=body)).status_code)
                    return
                async with http.stream("POST", "/v1/messages", json=body) as response:
                    statuses.append(response.status_code)
                    async for _ in response.aiter_bytes():
                        if i % 3 == 0:
                            break  # the client goes away mid-stream

        await asyncio.gather(*(one(i) for i in range(count)))
    return statuses


@pytest.fixture
def simulator_settings(request: pytest.FixtureRequest) -> SimulatorSettings:
    if request.node.name.startswith("test_concurrent"):  # failures and slow streams for the load test only
        return SimulatorSettings(seed=7, error_rate_500=0.1, stream_drop_rate=0.1, ttft_ms=20, per_token_ms=1)
    return SimulatorSettings(seed=7)


def test_concurrent_mixed_load_never_overshoots_and_counters_equal_the_ledger(gateway, gateway_key, admin,
                                                                              key_id) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    limit = 12 * worst_micro()
    create(admin, name="load", scope="key", scope_value=key_id, limit_usd=str(from_micro_usd(limit)))
    statuses = asyncio.run(_load(gateway.url, gateway_key, 80, 40))
    assert 200 in statuses and 429 in statuses and 500 in statuses
    rows = ledger_rows(gateway, 80)
    booked = sum(r.cost_micro_usd for r in rows)
    assert 0 < booked <= limit
    assert any(r.error_type == "client_disconnected" for r in rows)
    wait_for(lambda: usage_of(admin, "load")["reservations"] == 0)
    usage = usage_of(admin, "load")
    assert (usage["spent_micro_usd"], usage["ledger_micro_usd"], usage["drift_micro_usd"]) == (booked, booked, 0)
    assert usage["drift_tokens"] == 0


def test_downgrade_lowers_max_tokens_to_what_fits_and_says_so(gateway, gateway_key, admin, key_id) -> None:  # type: ignore[no-untyped-def]
    big = {**ASK, "max_tokens": 4000}
    limit = worst_micro({**ASK, "max_tokens": 1000})
    create(admin, name="fit", scope="key", scope_value=key_id, limit_usd=str(from_micro_usd(limit)),
           action="downgrade", min_max_tokens=50)  # fmt: skip
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}, timeout=30) as http:
        response = http.post("/v1/messages", json=big)
    assert response.status_code == 200
    header = response.headers["x-clawback-budget"]
    assert header.startswith("downgraded budget=fit max_tokens=4000->")
    assert 990 <= int(header.rsplit("->", 1)[1]) <= 1000
    assert ledger_rows(gateway, 1)[-1].budget_status == "downgraded"


def test_override_raises_the_limit_for_a_bounded_time_and_is_audited(gateway, gateway_key, admin, key_id) -> None:  # type: ignore[no-untyped-def]
    create(admin, name="tight", scope="key", scope_value=key_id, limit_usd="0.000001")
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}, timeout=30) as http:
        assert http.post("/v1/messages", json=ASK).status_code == 429
        made = admin.post("/admin/budgets/tight/override",
                          json={"limit_usd": "5", "duration_s": 1.5, "reason": "launch day incident"})  # fmt: skip
        assert made.status_code == 201, made.text
        expires = made.json()["expires_at"]
        assert http.post("/v1/messages", json=ASK).status_code == 200
        wait_for(lambda: http.post("/v1/messages", json=ASK).status_code == 429, timeout=5)
        refused_at = time.time()
    from datetime import datetime

    lateness = refused_at - datetime.fromisoformat(expires).timestamp()
    assert -0.1 < lateness < 1.0  # refused again right after the override expired (not before)
    shown = admin.get("/admin/budgets/tight").json()
    actions = [(a["action"], a["actor"], a["reason"]) for a in shown["audit"]]
    assert actions == [("create", "alice", None), ("override", "alice", "launch day incident")]


def test_bad_definitions_get_a_400_that_says_what_to_fix(gateway, admin) -> None:  # type: ignore[no-untyped-def]
    response = admin.post("/admin/budgets", json={"name": "x", "scope": "team"})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "limit_usd and/or limit_tokens" in message
    response = admin.post("/admin/budgets", json={"name": "x", "scope": "team", "scope_value": "a", "limit_usd": 1,
                                                  "timezone": "Mars/Olympus"})  # fmt: skip
    assert response.status_code == 400 and "IANA" in response.json()["error"]["message"]
    assert httpx.get(f"{gateway.url}/admin/budgets").status_code == 401


class Receiver:
    """A local webhook receiver that fails its first delivery (the sender must retry)."""

    def __init__(self) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        self.calls = 0
        self.lock = threading.Lock()

        async def hook(request: Request) -> Response:
            with self.lock:
                self.calls += 1
                first = self.calls == 1
            if first:
                return Response(status_code=500)
            self.received.append((time.time(), await request.json()))
            return Response(status_code=200)

        self.app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])


@pytest.fixture
def receiver():  # type: ignore[no-untyped-def]
    hook = Receiver()
    with BackgroundServer(hook.app) as server:
        hook.url = server.url + "/hook"  # type: ignore[attr-defined]
        yield hook


@pytest.fixture
def budget_settings(request) -> BudgetSettings:  # type: ignore[no-untyped-def]
    hook = request.getfixturevalue("receiver") if "receiver" in request.fixturenames else None
    return BudgetSettings(estimate_margin=MARGIN, max_wait_s=5.0, refresh_s=0.2,
                          webhook_url=hook.url if hook else None)  # fmt: skip


def test_threshold_alert_reaches_the_webhook_once_with_retries(receiver, gateway, gateway_key, admin,
                                                               key_id) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    limit = 4 * worst_micro()
    create(admin, name="alerting", scope="key", scope_value=key_id, limit_usd=str(from_micro_usd(limit)),
           thresholds=[1, 1000], forecast=False)  # fmt: skip
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}, timeout=30) as http:
        for _ in range(3):
            assert http.post("/v1/messages", json=ASK).status_code == 200
    wait_for(lambda: receiver.received, timeout=10)
    time.sleep(0.5)
    assert len(receiver.received) == 1 and receiver.calls == 2  # one alert, delivered on the second attempt
    payload = receiver.received[0][1]
    assert "alerting" in payload["text"] and payload["clawback"]["threshold"] == 1
    shown = admin.get("/admin/budgets/alerting").json()
    assert [(a["kind"], a["threshold"], a["delivered"]) for a in shown["alerts"]] == [("threshold", 1, True)]
    assert 'clawback_budget_alerts_total{budget="alerting",kind="threshold"} 1.0' in httpx.get(
        f"{gateway.url}/metrics").text  # fmt: skip


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_counter_store_unreachable_fails_open_or_closed_and_the_ledger_says_so(mode, gateway_settings, simulator,
                                                                               gateway_key) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    from clawback.gateway.app import create_gateway_app

    budgets = gateway_settings.budgets.model_copy(update={"backend": "redis", "redis_url": "redis://127.0.0.1:1/0",
                                                          "redis_timeout_s": 0.1})  # fmt: skip
    app = create_gateway_app(gateway_settings.model_copy(update={"budgets": budgets}))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url, timeout=30) as http:
        http.headers["x-api-key"] = gateway_key
        made = http.post("/admin/budgets", headers=ADMIN, json={"name": mode, "scope": "org", "limit_usd": "100",
                                                                "on_store_error": mode})  # fmt: skip
        assert made.status_code == 201
        response = http.post("/v1/messages", json=ASK)
        if mode == "open":
            assert response.status_code == 200
        else:
            assert response.status_code == 503 and response.json()["error"]["type"] == "api_error"
            assert "fails closed" in response.json()["error"]["message"]
        with LedgerReader(gateway_settings.ledger.url) as reader:
            row = wait_for(lambda: [r for r in reader.rows() if r.endpoint == "messages"])[-1]
        assert row.budget_status == f"fail_{mode}"
