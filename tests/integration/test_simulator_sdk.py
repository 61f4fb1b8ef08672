"""The simulator driven by the official ``anthropic`` SDK over real HTTP."""

from __future__ import annotations

import time

import anthropic
import httpx
import pytest

MODEL = "claude-sonnet-4-6"


@pytest.fixture
def client(simulator):
    return anthropic.Anthropic(base_url=simulator.url, api_key="sk-test-a", max_retries=0)


def test_plain_call(client, sim_admin):
    message = client.messages.create(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "Is the flat on Elm Street free?"}]
    )
    assert message.type == "message" and message.role == "assistant"
    assert message.content[0].type == "text" and "Elm Street" in message.content[0].text
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    billed = sim_admin.get("/_simulator/requests").json()
    assert billed[-1]["usage"]["output_tokens"] == message.usage.output_tokens
    assert billed[-1]["cost_micro_usd"] > 0


def test_stream_event_sequence_and_cumulative_usage(client):
    with client.messages.stream(
        model=MODEL, max_tokens=200, messages=[{"role": "user", "content": "Tell me about the garden."}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "content_block_delta" in kinds and "message_delta" in kinds
    assert final.usage.output_tokens > 1
    assert "garden" in final.content[0].text


def test_raw_stream_has_ping_and_message_delta_usage(simulator):
    body = {"model": MODEL, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    response = httpx.post(f"{simulator.url}/v1/messages", json=body, headers={"x-api-key": "k"})
    assert response.headers["content-type"].startswith("text/event-stream")
    text = response.text
    assert "event: ping" in text
    assert text.index("event: message_start") < text.index("event: message_delta") < text.index("event: message_stop")


def test_tool_use_round_trip(client):
    tools = [
        {
            "name": "search_listings",
            "description": "Search property listings",
            "input_schema": {"type": "object", "properties": {"area": {"type": "string"}}, "required": ["area"]},
        }
    ]
    first = client.messages.create(
        model=MODEL, max_tokens=300, tools=tools, messages=[{"role": "user", "content": "Homes in Riverside?"}]
    )
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    assert call.name == "search_listings" and "area" in call.input
    second = client.messages.create(
        model=MODEL,
        max_tokens=300,
        tools=tools,
        messages=[
            {"role": "user", "content": "Homes in Riverside?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "3 homes found"}]},
        ],
    )
    assert second.stop_reason == "end_turn" and second.content[0].type == "text"


def test_tool_use_stream_has_input_json_delta(client):
    tools = [{"name": "lookup", "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    with client.messages.stream(
        model=MODEL, max_tokens=300, tools=tools, messages=[{"role": "user", "content": "find it"}]
    ) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "input_json_delta" in deltas
    assert final.content[-1].type == "tool_use" and final.content[-1].input == {"q": "find it"}


def test_thinking_block_when_asked(client):
    message = client.messages.create(
        model=MODEL,
        max_tokens=400,
        thinking={"type": "enabled", "budget_tokens": 1024},
        messages=[{"role": "user", "content": "Which listing fits a family of four?"}],
    )
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].signature


def test_count_tokens(client):
    result = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello, world"}])
    assert result.input_tokens > 0
    longer = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello, world " * 50}])
    assert longer.input_tokens > result.input_tokens


def test_batch_lifecycle(client, sim_admin):
    batch = client.messages.batches.create(
        requests=[
            {"custom_id": f"lead-{i}", "params": {"model": MODEL, "max_tokens": 50,
                                                  "messages": [{"role": "user", "content": f"Score lead {i}"}]}}
            for i in range(3)
        ]
        + [{"custom_id": "bad", "params": {"model": MODEL, "messages": []}}]
    )  # fmt: skip
    assert batch.processing_status == "in_progress"
    deadline = time.monotonic() + 10
    while client.messages.batches.retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    results = {r.custom_id: r.result for r in client.messages.batches.results(batch.id)}
    assert {k: v.type for k, v in results.items()} == {
        "lead-0": "succeeded", "lead-1": "succeeded", "lead-2": "succeeded", "bad": "errored"
    }  # fmt: skip
    assert [b.id for b in client.messages.batches.list()] == [batch.id]
    billed = [r for r in sim_admin.get("/_simulator/requests").json() if r["batch"] and r["status"] == 200]
    assert len(billed) == 3
    # Half price: the simulator bills the batch usage at half the direct price.
    from clawback.api.usage import Usage
    from clawback.pricing import load_price_book

    usage = Usage.from_api(billed[0]["usage"])
    direct_cost = load_price_book().cost(MODEL, usage).micro_usd
    assert billed[0]["cost_micro_usd"] == load_price_book().cost(MODEL, usage, batch=True).micro_usd
    assert billed[0]["cost_micro_usd"] * 2 == pytest.approx(direct_cost, abs=1)
    assert client.messages.batches.delete(batch.id).type == "message_batch_deleted"


def test_batch_cancel(simulator):
    client = anthropic.Anthropic(base_url=simulator.url, api_key="sk-cancel", max_retries=0)
    params = {"model": MODEL, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}
    batch = client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])
    client.messages.batches.cancel(batch.id)
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.request_counts.canceled == 1


def test_models_list(client):
    ids = [m.id for m in client.models.list(limit=1000)]
    assert MODEL in ids and "claude-opus-4-1" in ids
