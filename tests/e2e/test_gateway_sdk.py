"""The official SDK works unchanged against ``clawback serve`` in front of ``clawback simulate``, and every
request lands in the ledger at the cost the simulator itself billed."""

from __future__ import annotations

import asyncio
import time

import anthropic
import httpx
import pytest

from tests.conftest import wait_for
from tests.e2e.scenarios import assert_ledger_matches_simulator, ledger_rows, tool_round_trip

MODEL = "claude-sonnet-4-6"
POLICY = " ".join(f"Agency policy clause {i}: viewings need 24 hours notice and photo ID." for i in range(200))


@pytest.fixture
def client(gateway, gateway_key):
    return anthropic.Anthropic(base_url=gateway.url, api_key=gateway_key, max_retries=0)


def test_sync_plain_and_stream_with_caching(client, gateway_settings, sim_admin):
    system = [{"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral"}}]
    first = client.messages.create(model=MODEL, max_tokens=50, system=system,
                                   messages=[{"role": "user", "content": "Viewing on Sunday?"}])  # fmt: skip
    assert first.usage.cache_creation_input_tokens > 0
    with client.messages.stream(model=MODEL, max_tokens=50, system=system,
                                messages=[{"role": "user", "content": "And Monday?"}]) as stream:  # fmt: skip
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    raw = client.messages.create(model=MODEL, max_tokens=50, stream=True,
                                 messages=[{"role": "user", "content": "plain stream"}])  # fmt: skip
    assert [e.type for e in raw][-1] == "message_stop"
    rows = assert_ledger_matches_simulator(gateway_settings, sim_admin, 3)
    assert [r.stream for r in sorted(rows, key=lambda r: r.started_at)] == [False, True, True]
    assert {r.team for r in rows} == {"sales"} and {r.feature for r in rows} == {"lead-chat"}
    assert all(r.ttft_ms is not None and r.latency_ms >= r.ttft_ms for r in rows)


def test_async_plain_and_stream(gateway, gateway_key, gateway_settings, sim_admin):
    async def main():
        client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key=gateway_key, max_retries=0)
        hello = [{"role": "user", "content": "async hello"}]
        plain = await client.messages.create(model=MODEL, max_tokens=40, messages=hello)
        streamed = [{"role": "user", "content": "async stream"}]
        async with client.messages.stream(model=MODEL, max_tokens=40, messages=streamed) as stream:
            text = await stream.get_final_text()
        await client.close()
        return plain, text

    plain, text = asyncio.run(main())
    assert "async hello" in plain.content[0].text and "async stream" in text
    assert_ledger_matches_simulator(gateway_settings, sim_admin, 2)


def test_tool_use_round_trip(client, gateway_settings, sim_admin):
    tool_round_trip(client, MODEL)
    assert_ledger_matches_simulator(gateway_settings, sim_admin, 2)


def test_count_tokens_and_models(client, gateway_settings):
    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello, world"}])
    assert counted.input_tokens > 0
    assert MODEL in [m.id for m in client.models.list(limit=1000)]
    rows = ledger_rows(gateway_settings, 1)
    assert rows[0].endpoint == "count_tokens" and rows[0].cost_micro_usd == 0


def test_batch_through_the_gateway(client):
    params = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "score"}]}
    batch = client.messages.batches.create(requests=[{"custom_id": f"l{i}", "params": params} for i in range(2)])
    deadline = time.monotonic() + 10
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    results = list(client.messages.batches.results(batch.id))
    assert sorted(r.custom_id for r in results) == ["l0", "l1"]
    assert all(r.result.type == "succeeded" for r in results)


def test_unknown_fields_blocks_and_beta_headers_reach_upstream_byte_for_byte(gateway, gateway_key, sim_admin):
    body = (
        b'{"model":"claude-sonnet-4-6","max_tokens":20,"future_field":{"nested":[1,2.50,"x"]},'
        b'"context_management":{"edits":[{"type":"clear_tool_uses_20250919"}]},'
        b'"messages":[{"role":"user","content":[{"type":"text","text":"hi"},'
        b'{"type":"brand_new_block","payload":"\\u00e9t\\u00e9"}]}]}'
    )
    headers = {
        "x-api-key": gateway_key,
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "context-management-2025-06-27,some-future-beta-2027-01-01",
        "x-claude-code-session-id": "sess-1",
    }
    response = httpx.post(f"{gateway.url}/v1/messages?beta=true", content=body, headers=headers)
    assert response.status_code == 200, response.text
    received = sim_admin.get("/_simulator/received").json()[-1]
    assert received["body"].encode() == body
    assert received["query"] == "beta=true"
    got = dict(received["headers"])
    assert got["anthropic-beta"] == headers["anthropic-beta"]
    assert got["anthropic-version"] == "2023-06-01"
    assert got["x-claude-code-session-id"] == "sess-1"
    assert got["x-api-key"] != gateway_key  # the client's clawback key never leaves the gateway


def test_relays_rate_limit_and_request_id_headers(gateway, gateway_key):
    body = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{gateway.url}/v1/messages", json=body, headers={"x-api-key": gateway_key})
    assert response.headers["request-id"].startswith("req_")
    assert "anthropic-ratelimit-requests-remaining" in response.headers
    assert response.headers["x-clawback-request-id"].startswith("cbreq_")


def test_claude_code_gateway_protocol(gateway, gateway_key):
    assert httpx.head(f"{gateway.url}/api/hello").status_code == 200
    models = httpx.get(f"{gateway.url}/v1/models?limit=1000", headers={"authorization": f"Bearer {gateway_key}"})
    assert models.status_code == 200 and len(models.json()["data"]) > 10


def test_healthz_and_metrics(client, gateway):
    client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "m"}])
    health = httpx.get(f"{gateway.url}/healthz").json()
    assert health["status"] == "ok" and health["ledger"]["database_up"]
    metrics = wait_for(lambda: (t := httpx.get(f"{gateway.url}/metrics").text) and "clawback_cost_usd_total" in t and t)
    assert 'clawback_requests_total{endpoint="messages",key=' in metrics
    assert "clawback_tokens_total" in metrics and "clawback_request_latency_seconds_bucket" in metrics
