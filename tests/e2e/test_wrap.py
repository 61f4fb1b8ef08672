"""``clawback.wrap(client)``: the official SDK, unchanged, with clawback's pipeline in place of its wire.

Everything runs against the real simulator over real HTTP. Each request must come back as the SDK's own
types and land in the ledger at the cost the simulator itself billed, with the wrapper's labels.
"""

from __future__ import annotations

import asyncio
import time

import anthropic
import pytest
from anthropic.types import Message, MessageTokensCount
from anthropic.types.messages import MessageBatch

import clawback
from clawback.serving import free_port
from clawback.storage.ledger import LedgerReader
from tests.e2e.scenarios import assert_ledger_matches_simulator, ledger_rows, tool_round_trip

MODEL = "claude-sonnet-4-6"
KEY = "sk-ant-wrap-test"
LABELS = {"team": "sales", "feature": "lead-chat", "region": "emea"}
POLICY = " ".join(f"Agency policy clause {i}: viewings need 24 hours notice and photo ID." for i in range(200))


@pytest.fixture
def client(simulator, gateway_settings):
    wrapped = clawback.wrap(
        anthropic.Anthropic(base_url=simulator.url, api_key=KEY, max_retries=0),
        settings=gateway_settings,
        labels=LABELS,
    )
    yield wrapped
    wrapped.close()


def assert_labelled(rows) -> None:
    for row in rows:
        # the caller's labels, beside the pipeline's own: the flags stage's decision (cohort, bucket, a mode per
        # stage as flag.<stage>) and pruning's default shadow verdict
        pipeline = ("cohort", "bucket_by", "bucket_id", "pruning")
        own = {k: v for k, v in row.labels.items() if k not in pipeline and not k.startswith("flag.")}
        assert (row.team, row.feature, own) == ("sales", "lead-chat", {"region": "emea"})
        assert row.labels["cohort"] == "treated"
        assert row.key_id is not None and row.key_id.startswith("anthropic:") and KEY not in row.key_id


def test_sync_create_plain_streamed_and_messages_stream(client, gateway_settings, sim_admin):
    system = [{"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral"}}]
    first = client.messages.create(model=MODEL, max_tokens=50, system=system,
                                   messages=[{"role": "user", "content": "Viewing on Sunday?"}])  # fmt: skip
    assert isinstance(first, Message) and first.usage.cache_creation_input_tokens > 0
    assert first._request_id is not None and first._request_id.startswith("req_")
    with client.messages.stream(model=MODEL, max_tokens=50, system=system,
                                messages=[{"role": "user", "content": "And Monday?"}]) as stream:  # fmt: skip
        final = stream.get_final_message()
    assert isinstance(final, Message) and final.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    raw = client.messages.create(model=MODEL, max_tokens=50, stream=True,
                                 messages=[{"role": "user", "content": "plain stream"}])  # fmt: skip
    assert isinstance(raw, anthropic.Stream)
    events = list(raw)
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert "plain stream" in text
    rows = assert_ledger_matches_simulator(gateway_settings, sim_admin, 3)
    assert [r.stream for r in rows] == [False, True, True]
    assert all(r.status == 200 and r.error_type is None for r in rows)
    assert all(r.ttft_ms is not None and r.latency_ms >= r.ttft_ms for r in rows)
    assert_labelled(rows)


def test_async_create_plain_streamed_and_messages_stream(simulator, gateway_settings, sim_admin):
    async def main():
        client = clawback.wrap(
            anthropic.AsyncAnthropic(base_url=simulator.url, api_key=KEY, max_retries=0),
            settings=gateway_settings,
            labels=LABELS,
        )
        async with client:
            plain = await client.messages.create(model=MODEL, max_tokens=40,
                                                 messages=[{"role": "user", "content": "async hello"}])  # fmt: skip
            raw = await client.messages.create(model=MODEL, max_tokens=40, stream=True,
                                               messages=[{"role": "user", "content": "async raw"}])  # fmt: skip
            assert isinstance(raw, anthropic.AsyncStream)
            kinds = [event.type async for event in raw]
            streamed = [{"role": "user", "content": "async stream"}]
            async with client.messages.stream(model=MODEL, max_tokens=40, messages=streamed) as stream:
                final = await stream.get_final_message()
        return plain, kinds, final

    plain, kinds, final = asyncio.run(main())
    assert isinstance(plain, Message) and isinstance(final, Message)
    assert "async hello" in plain.content[0].text and "async stream" in final.content[0].text
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    rows = assert_ledger_matches_simulator(gateway_settings, sim_admin, 3)
    assert [r.stream for r in rows] == [False, True, True]
    assert_labelled(rows)


def test_tool_use_round_trip(client, gateway_settings, sim_admin):
    first, _ = tool_round_trip(client, MODEL)
    call = next(b for b in first.content if b.type == "tool_use")
    assert isinstance(call, anthropic.types.ToolUseBlock)
    assert_ledger_matches_simulator(gateway_settings, sim_admin, 2)


def test_count_tokens_and_passthrough_models(client, gateway_settings):
    counted = client.messages.count_tokens(model=MODEL, messages=[{"role": "user", "content": "Hello, world"}])
    assert isinstance(counted, MessageTokensCount) and counted.input_tokens > 0
    assert MODEL in [m.id for m in client.models.list(limit=1000)]  # forwarded, not recorded
    client.close()  # flushes: the rows are there at once
    rows = LedgerReader(gateway_settings.ledger.url).rows()
    assert [(r.endpoint, r.status, r.cost_micro_usd) for r in rows] == [("count_tokens", 200, 0)]
    assert_labelled(rows)


def run_batch(create, retrieve, results):
    """Create a two-request batch, poll until it ended, return its results (sync callables)."""
    params = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "score"}]}
    batch = create(requests=[{"custom_id": f"l{i}", "params": params} for i in range(2)])
    assert isinstance(batch, MessageBatch)
    deadline = time.monotonic() + 10
    while retrieve(batch.id).processing_status != "ended":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return list(results(batch.id))


def test_batch_create_poll_results(client):
    batches = client.messages.batches
    results = run_batch(batches.create, batches.retrieve, batches.results)
    assert sorted(r.custom_id for r in results) == ["l0", "l1"]
    assert all(r.result.type == "succeeded" and isinstance(r.result.message, Message) for r in results)


def test_async_batch_create_poll_results(simulator, gateway_settings):
    async def main():
        async with clawback.wrap(
            anthropic.AsyncAnthropic(base_url=simulator.url, api_key=KEY, max_retries=0), settings=gateway_settings
        ) as client:
            params = {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": "score"}]}
            batch = await client.messages.batches.create(requests=[{"custom_id": "a", "params": params}])
            deadline = time.monotonic() + 10
            while (await client.messages.batches.retrieve(batch.id)).processing_status != "ended":
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            return [r async for r in await client.messages.batches.results(batch.id)]

    results = asyncio.run(main())
    assert [(r.custom_id, r.result.type) for r in results] == [("a", "succeeded")]


def test_sdk_error_is_the_sdks_own_and_recorded(client, gateway_settings):
    with pytest.raises(anthropic.InternalServerError) as raised:
        client.messages.create(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "busy?"}],
                               extra_headers={"x-simulator-fault": "529"})  # fmt: skip
    assert isinstance(raised.value, anthropic.APIStatusError) and raised.value.status_code == 529
    assert raised.value.body["error"]["type"] == "overloaded_error"
    [row] = ledger_rows(gateway_settings, 1)
    assert (row.status, row.error_type, row.cost_micro_usd, row.stream) == (529, "overloaded_error", 0, False)
    assert row.upstream_request_id is not None


def test_async_sdk_error_in_a_stream_request(simulator, gateway_settings):
    async def main():
        sdk = anthropic.AsyncAnthropic(base_url=simulator.url, api_key=KEY, max_retries=0)
        busy = {"x-simulator-fault": "529"}
        async with (
            clawback.wrap(sdk, settings=gateway_settings) as client,
            client.messages.stream(
                model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "busy?"}], extra_headers=busy
            ) as stream,
        ):
            await stream.get_final_message()

    with pytest.raises(anthropic.APIStatusError) as raised:
        asyncio.run(main())
    assert raised.value.status_code == 529
    [row] = ledger_rows(gateway_settings, 1)
    assert (row.status, row.error_type, row.stream) == (529, "overloaded_error", True)


def test_sdk_retries_run_through_the_pipeline_each_attempt_recorded(simulator, gateway_settings):
    sdk = anthropic.Anthropic(base_url=simulator.url, api_key=KEY, max_retries=1)
    with clawback.wrap(sdk, settings=gateway_settings) as client, pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=20, messages=[{"role": "user", "content": "busy?"}],
                               extra_headers={"x-simulator-fault": "529"})  # fmt: skip
    rows = LedgerReader(gateway_settings.ledger.url).rows()
    assert [(r.status, r.error_type) for r in rows] == [(529, "overloaded_error")] * 2


def test_close_flushes_the_ledger(simulator, gateway_settings):
    slow = gateway_settings.model_copy(
        update={"ledger": gateway_settings.ledger.model_copy(update={"flush_interval_s": 30.0})}
    )
    wrapped = clawback.wrap(anthropic.Anthropic(base_url=simulator.url, api_key=KEY), settings=slow)
    for _ in range(3):
        wrapped.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "flush"}])
    wrapped.close()
    assert len(LedgerReader(slow.ledger.url).rows()) == 3


def test_upstream_receives_what_the_unwrapped_sdk_sends_with_the_callers_own_key(
    client, simulator, sim_admin, gateway_settings
):
    def send(sdk_client):
        sdk_client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "hdr"}],
                                   extra_headers={"anthropic-beta": "some-future-beta-2027-01-01",
                                                  "x-clawback-feature": "override"})  # fmt: skip
        received = sim_admin.get("/_simulator/received").json()[-1]
        hop = {"host", "content-length", "accept-encoding", "connection"}
        return received["body"], sorted((k, v) for k, v in received["headers"] if k not in hop)

    with anthropic.Anthropic(base_url=simulator.url, api_key=KEY, max_retries=0) as unwrapped:
        expected = send(unwrapped)
    body, headers = send(client)
    assert (body, headers) == expected
    credentials = dict(headers).get("x-api-key") or dict(headers)["authorization"].removeprefix("Bearer ")
    assert credentials == KEY
    [row] = ledger_rows(gateway_settings, 1)
    assert row.feature == "override" and row.team == "sales"  # a per-request header beats the wrapper's label


def test_a_stream_closed_unread_is_still_recorded(client, gateway_settings):
    stream = client.messages.create(model=MODEL, max_tokens=50, stream=True,
                                    messages=[{"role": "user", "content": "never read"}])  # fmt: skip
    stream.close()
    [row] = ledger_rows(gateway_settings, 1)
    assert row.stream and row.error_type == "client_disconnected" and row.input_tokens > 0


def test_timeout_raises_the_sdks_error_and_the_billed_call_is_still_recorded(simulator, gateway_settings, sim_admin):
    with clawback.wrap(anthropic.Anthropic(base_url=simulator.url, api_key=KEY, max_retries=0),
                       settings=gateway_settings) as client:  # fmt: skip
        started = time.monotonic()
        with pytest.raises(anthropic.APITimeoutError):
            client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "slow"}],
                                   extra_headers={"x-simulator-fault": "delay:800"}, timeout=0.2)  # fmt: skip
        assert time.monotonic() - started < 0.7
        rows = assert_ledger_matches_simulator(gateway_settings, sim_admin, 1)
    assert rows[0].status == 200


def test_unreachable_upstream_is_a_connection_error(gateway_settings):
    down = f"http://127.0.0.1:{free_port('127.0.0.1')}"
    sdk = anthropic.Anthropic(base_url=down, api_key=KEY, max_retries=0)
    with clawback.wrap(sdk, settings=gateway_settings) as client, pytest.raises(anthropic.APIConnectionError):
        client.messages.create(model=MODEL, max_tokens=10, messages=[{"role": "user", "content": "anyone?"}])
    [row] = LedgerReader(gateway_settings.ledger.url).rows()
    assert row.status == 502 and row.cost_micro_usd == 0


def test_wrap_returns_a_copy_and_refuses_other_objects(simulator, gateway_settings):
    original = anthropic.Anthropic(base_url=simulator.url, api_key=KEY)
    with clawback.wrap(original, settings=gateway_settings) as wrapped:
        assert type(wrapped) is anthropic.Anthropic and wrapped is not original
        assert wrapped._client is not original._client and wrapped.base_url == original.base_url
    with pytest.raises(TypeError):
        clawback.wrap(object(), settings=gateway_settings)  # type: ignore[type-var]
    with pytest.raises(TypeError):
        clawback.wrap(original, settings=gateway_settings, labels={"team": 7})  # type: ignore[dict-item]
    original.close()


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_closing_the_client_closes_every_stage_of_its_pipeline(simulator, gateway_settings, monkeypatch, kind):
    """As the gateway does at shutdown: stages holding Redis clients, batch pollers or a flag watcher let go."""
    from clawback.pipeline.dispatch.stage import DispatchStage
    from clawback.pipeline.flags import FlagsStage

    closed: list[str] = []
    for cls in (DispatchStage, FlagsStage):
        original = cls.aclose

        async def recording(self, _original=original, _name=cls.__name__):
            closed.append(_name)
            await _original(self)

        monkeypatch.setattr(cls, "aclose", recording)
    request = {"model": MODEL, "max_tokens": 10, "messages": [{"role": "user", "content": "close"}]}
    if kind == "sync":
        wrapped = clawback.wrap(anthropic.Anthropic(base_url=simulator.url, api_key=KEY), settings=gateway_settings)
        wrapped.messages.create(**request)
        assert closed == []
        wrapped.close()
    else:

        async def run() -> None:
            plain = anthropic.AsyncAnthropic(base_url=simulator.url, api_key=KEY)
            wrapped = clawback.wrap(plain, settings=gateway_settings)
            await wrapped.messages.create(**request)
            assert closed == []
            await wrapped.close()

        asyncio.run(run())
    assert sorted(closed) == ["DispatchStage", "FlagsStage"]
    assert len(LedgerReader(gateway_settings.ledger.url).rows()) == 1
