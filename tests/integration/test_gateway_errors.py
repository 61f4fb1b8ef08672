"""Bad input to the gateway: an Anthropic-shaped 4xx, never a 500, and the ledger stays correct."""

from __future__ import annotations

import socket

import httpx
import orjson
import pytest

from clawback.config import Settings
from clawback.gateway.app import create_gateway_app
from clawback.serving import BackgroundServer, free_port
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerReader
from tests.conftest import wait_for

MODEL = "claude-sonnet-4-6"
OK = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def post(gateway, key, body=None, raw=None, headers=None):
    headers = {"content-type": "application/json", **({"x-api-key": key} if key else {}), **(headers or {})}
    if raw is not None:
        return httpx.post(f"{gateway.url}/v1/messages", content=raw, headers=headers, timeout=30)
    return httpx.post(f"{gateway.url}/v1/messages", json=body, headers=headers, timeout=30)


def envelope(response, status, error_type):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert body["error"]["message"]
    return body["error"]["message"]


def test_malformed_json(gateway, gateway_key):
    assert "JSON" in envelope(post(gateway, gateway_key, raw=b"{not json"), 400, "invalid_request_error")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({**OK, "max_tokens": "10"}, "max_tokens"),
        ({**OK, "messages": "hi"}, "messages"),
        ({**OK, "model": 5}, "model"),
        ({k: v for k, v in OK.items() if k != "model"}, "model: Field required"),
        ({**OK, "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({**OK, "stream": "yes"}, "stream"),
    ],
)
def test_wrong_field_types(gateway, gateway_key, simulator, body, fragment):
    """The gateway checks only what it reads itself (``stream``); the upstream judges the rest, and its own
    error reaches the client unmodified."""
    through = post(gateway, gateway_key, body)
    assert fragment in envelope(through, 400, "invalid_request_error")
    direct = httpx.post(f"{simulator.url}/v1/messages", json=body, headers={"x-api-key": "sk-direct"}, timeout=30)
    assert through.json()["error"] == direct.json()["error"]


@pytest.mark.parametrize(
    "body",
    [
        {**OK, "messages": [{"role": "developer", "content": "a role from the future"}]},
        {**OK, "messages": [{"role": "user", "content": [{"type": "hologram", "frames": 3}]}]},
        {**OK, "messages": [{"role": "user", "content": 42}]},
        {**OK, "messages": ["hi"]},
        {**OK, "system": 7},
        {**OK, "tools": {"name": "x"}},
    ],
)
def test_shapes_the_gateway_does_not_know_reach_the_upstream_untouched(tmp_path, simulator, sim_admin, body):
    """With every stage on, a shape no stage understands goes out byte for byte and the upstream answers."""
    settings = Settings(
        upstream={"url": simulator.url}, gateway={"require_key": False},
        pruning={"enabled": True, "trigger_tokens": 10, "target_tokens": 5},
        prompt_cache={"enabled": True}, exact_cache={"enabled": True, "default_policy": "all"},
        ledger={"url": f"sqlite:///{tmp_path / 'l.db'}", "journal_path": str(tmp_path / "j")},
    )  # fmt: skip
    raw = orjson.dumps(body)
    with BackgroundServer(create_gateway_app(settings)) as gateway:
        through = post(gateway, None, raw=raw)
    assert through.status_code != 500, through.text
    forwarded = [r for r in sim_admin.get("/_simulator/received").json() if r["path"] == "/v1/messages"]
    assert [r["body"].encode() for r in forwarded] == [raw]
    direct = httpx.post(f"{simulator.url}/v1/messages", content=raw, headers={"x-api-key": "sk-direct"}, timeout=30)
    assert through.status_code == direct.status_code
    if direct.status_code != 200:  # (the simulator takes block types it does not know, as the gateway does)
        assert through.json()["error"] == direct.json()["error"]


def test_body_over_limit(gateway_settings, simulator):
    settings = gateway_settings.model_copy(update={"gateway": gateway_settings.gateway.model_copy(
        update={"max_body_bytes": 4096, "require_key": False})})  # fmt: skip
    with BackgroundServer(create_gateway_app(settings)) as gateway:
        big = {**OK, "messages": [{"role": "user", "content": "x" * 10_000}]}
        envelope(post(gateway, None, big), 413, "request_too_large")
        # Without a content-length (chunked upload), the limit still holds.
        chunks = (b'{"model":"x","pad":"' + b"y" * 1000 for _ in range(10))
        response = httpx.post(
            f"{gateway.url}/v1/messages", content=chunks, headers={"content-type": "application/json"}
        )
        envelope(response, 413, "request_too_large")


def test_missing_unknown_and_revoked_keys(gateway, gateway_settings):
    assert "required" in envelope(post(gateway, None, OK), 401, "authentication_error")
    envelope(post(gateway, "cb-not-a-real-key", OK), 401, "authentication_error")
    envelope(post(gateway, "sk-ant-somebody-elses", OK), 401, "authentication_error")
    store = KeyStore(gateway_settings.ledger.url)
    key, secret = store.create("soon revoked")
    # Created by another process: seen at once, or within 0.25 s of the last miss.
    wait_for(lambda: post(gateway, secret, OK).status_code == 200)
    assert store.revoke(key.id)
    # Another process revoked it: the gateway notices within its refresh interval (2 s).
    response = wait_for(lambda: (r := post(gateway, secret, OK)).status_code == 401 and r)
    assert "revoked" in envelope(response, 401, "authentication_error")
    with LedgerReader(gateway_settings.ledger.url) as reader:
        rows = wait_for(lambda: reader.rows() or None)
        # Refused requests reach neither the upstream nor the ledger: every row is a served request of that key.
        assert rows and all(r.status == 200 and r.key_id == key.id for r in rows)


def test_upstream_errors_relayed_unmodified_and_recorded(gateway, gateway_key, gateway_settings):
    response = post(gateway, gateway_key, OK, headers={"x-simulator-fault": "529"})
    assert response.status_code == 529
    assert response.json()["error"] == {"type": "overloaded_error", "message": "Overloaded (simulated)."}
    limited = post(gateway, gateway_key, OK, headers={"x-simulator-fault": "429"})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    with LedgerReader(gateway_settings.ledger.url) as reader:
        rows = wait_for(lambda: len(r := reader.rows()) == 2 and r)
    assert sorted(r.error_type for r in rows) == ["overloaded_error", "rate_limit_error"]
    assert all(r.cost_micro_usd == 0 for r in rows)


def test_unreachable_upstream_is_a_502_envelope(tmp_path):
    settings = Settings(
        upstream={"url": f"http://127.0.0.1:{free_port()}", "connect_timeout_s": 2},
        gateway={"require_key": False},
        dispatch={"max_attempts": 1},  # the envelope as the client sees it at once (dispatch's tests retry)
        ledger={"url": f"sqlite:///{tmp_path / 'l.db'}", "journal_path": str(tmp_path / "j")},
    )
    with BackgroundServer(create_gateway_app(settings)) as gateway:
        response = post(gateway, None, OK)
        message = envelope(response, 502, "api_error")
        assert "could not be reached" in message


def test_timing_out_upstream_is_a_504_envelope(gateway_settings):
    settings = gateway_settings.model_copy(update={
        "upstream": gateway_settings.upstream.model_copy(update={"read_timeout_s": 0.3}),
        "gateway": gateway_settings.gateway.model_copy(update={"require_key": False}),
    })  # fmt: skip
    with BackgroundServer(create_gateway_app(settings)) as gateway:
        response = post(gateway, None, OK, headers={"x-simulator-fault": "delay:2000"})
        assert "0.3 s" in envelope(response, 504, "timeout_error")


def test_client_disconnect_mid_stream_is_recorded_and_cancels_upstream(gateway_settings, simulator_settings):
    from clawback.upstream.simulator.app import create_simulator_app

    slow = simulator_settings.model_copy(update={"per_token_ms": 20.0, "output_tokens": 400})
    with BackgroundServer(create_simulator_app(slow)) as upstream:
        settings = gateway_settings.model_copy(update={
            "upstream": gateway_settings.upstream.model_copy(update={"url": upstream.url}),
            "gateway": gateway_settings.gateway.model_copy(update={"require_key": False}),
        })  # fmt: skip
        with BackgroundServer(create_gateway_app(settings)) as gateway:
            payload = httpx.Request("POST", "/", json={**OK, "stream": True, "max_tokens": 400}).content
            request = (
                f"POST /v1/messages HTTP/1.1\r\nHost: {gateway.host}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\n\r\n"
            ).encode() + payload
            with socket.create_connection((gateway.host, gateway.port)) as sock:
                sock.sendall(request)
                received = b""
                while b"content_block_delta" not in received:
                    received += sock.recv(65536)
                assert received.startswith(b"HTTP/1.1 200")
            # The client is gone after the first deltas of a stream that would take ~8 s.
            with LedgerReader(settings.ledger.url) as reader:
                rows = wait_for(lambda: reader.rows() or None)
            row = rows[0]
            assert row.stream and row.error_type == "client_disconnected"
            assert row.input_tokens > 0 and 0 < row.output_tokens < 400  # the usage seen so far
            assert row.latency_ms < 5000
            # The upstream call was cancelled too: the simulator saw its client (the gateway) leave.
            billed = wait_for(
                lambda: [r for r in httpx.get(f"{upstream.url}/_simulator/requests").json() if r["status"] == 499]
            )
            assert len(billed) == 1 and billed[0]["usage"]["output_tokens"] < 400


def test_no_traceback_on_unknown_route(gateway):
    response = httpx.get(f"{gateway.url}/nowhere")
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
