"""Bad input gets the API's 4xx envelopes from the simulator, never a 500."""

from __future__ import annotations

import anthropic
import httpx
import pytest

MODEL = "claude-sonnet-4-6"
OK = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def post(simulator, body=None, raw: bytes | None = None, headers=None):
    headers = {"x-api-key": "sk-errors", "content-type": "application/json", **(headers or {})}
    if raw is None:
        return httpx.post(f"{simulator.url}/v1/messages", json=body, headers=headers)
    return httpx.post(f"{simulator.url}/v1/messages", content=raw, headers=headers)


def assert_envelope(response, status, error_type, fragment=""):
    assert response.status_code == status, response.text
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == error_type
    assert fragment in body["error"]["message"]
    assert response.headers.get("request-id") or body.get("request_id")


def test_malformed_json(simulator):
    assert_envelope(post(simulator, raw=b'{"model": '), 400, "invalid_request_error", "JSON")


@pytest.mark.parametrize("field", ["model", "messages", "max_tokens"])
def test_missing_required_field(simulator, field):
    body = {k: v for k, v in OK.items() if k != field}
    assert_envelope(post(simulator, body), 400, "invalid_request_error", f"{field}: Field required")


def test_wrong_type(simulator):
    assert_envelope(post(simulator, {**OK, "max_tokens": "ten"}), 400, "invalid_request_error", "max_tokens")


def test_unknown_model(simulator):
    assert_envelope(post(simulator, {**OK, "model": "claude-nonexistent-9"}), 404, "not_found_error", "model")


def test_tool_result_without_tool_use(simulator):
    body = {
        **OK,
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]},
        ],
    }
    assert_envelope(post(simulator, body), 400, "invalid_request_error", "tool_use_id")


def test_fifth_breakpoint(simulator):
    block = {"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}
    body = {**OK, "system": [block] * 3, "messages": [{"role": "user", "content": [block, block]}]}
    assert_envelope(post(simulator, body), 400, "invalid_request_error", "A maximum of 4 blocks")


def test_missing_key(simulator):
    response = httpx.post(f"{simulator.url}/v1/messages", json=OK)
    assert_envelope(response, 401, "authentication_error", "x-api-key")


def test_body_over_limit(simulator):
    response = post(simulator, raw=b" " * (32 * 1024 * 1024 + 1))
    assert_envelope(response, 413, "request_too_large")


def test_unknown_path_is_enveloped(simulator):
    response = httpx.get(f"{simulator.url}/v1/nothing-here", headers={"x-api-key": "k"})
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(("fault", "status", "error_type"), [("429", 429, "rate_limit_error"),
                                                               ("500", 500, "api_error"),
                                                               ("529", 529, "overloaded_error")])  # fmt: skip
def test_injected_errors(simulator, fault, status, error_type):
    response = post(simulator, OK, headers={"x-simulator-fault": fault})
    assert_envelope(response, status, error_type)
    if status == 429:
        assert response.headers["retry-after"].isdigit()


def test_rate_limit_enforced_with_retry_after(simulator_settings):
    from clawback.serving import BackgroundServer
    from clawback.upstream.simulator.app import create_simulator_app

    settings = simulator_settings.model_copy(update={"requests_per_minute": 2})
    with BackgroundServer(create_simulator_app(settings)) as server:
        first = post(server, OK)
        assert first.headers["anthropic-ratelimit-requests-limit"] == "2"
        assert first.headers["anthropic-ratelimit-requests-remaining"] == "1"
        assert "anthropic-ratelimit-input-tokens-remaining" in first.headers
        assert first.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        post(server, OK)
        third = post(server, OK)
        assert_envelope(third, 429, "rate_limit_error", "rate limit")
        assert int(third.headers["retry-after"]) >= 1
        # The SDK reads it as a RateLimitError.
        client = anthropic.Anthropic(base_url=server.url, api_key="sk-errors", max_retries=0)
        with pytest.raises(anthropic.RateLimitError):
            client.messages.create(**OK)


def test_stream_drop_sends_error_event_after_200(simulator):
    body = {**OK, "stream": True, "max_tokens": 200}
    response = post(simulator, body, headers={"x-simulator-fault": "drop"})
    assert response.status_code == 200
    assert "event: error" in response.text and "overloaded_error" in response.text
    assert "event: message_stop" not in response.text
