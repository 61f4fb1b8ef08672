import asyncio

import orjson
import pytest

from clawback.api.errors import OverloadedError
from clawback.api.usage import Usage
from clawback.pipeline import Pipeline, Reply, RequestContext
from clawback.pipeline.ledger import LedgerStage
from clawback.pricing import PriceBook

BODY = {"model": "claude-sonnet-4-6", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def ctx(**kw):
    return RequestContext(request_id="r1", endpoint="messages", body=dict(BODY), raw_body=orjson.dumps(BODY), **kw)


class Recorder:
    def __init__(self, name, log):
        self.name, self.log = name, log
        self.below = None

    def bind(self, chain):
        self.below = [stage.name for stage in chain.below]

    async def aclose(self):
        self.log.append(f"close {self.name}")

    async def handle(self, ctx, call_next):
        self.log.append(f"{self.name}>")
        reply = await call_next(ctx)
        self.log.append(f"<{self.name}")
        return reply


class Booker(Recorder):
    """Books a saving once a stream ends, as pruning and the planner do."""

    async def handle(self, ctx, call_next):
        reply = await call_next(ctx)
        reply.on_close(lambda done: ctx.savings.add(self.name, 7))
        return reply


def test_stages_run_as_an_onion_in_declared_order():
    log = []

    async def terminal(ctx):
        log.append("upstream")
        return Reply(status=200, headers=[], body=b"{}")

    pipeline = Pipeline([Recorder("a", log), Recorder("b", log)], terminal)
    asyncio.run(pipeline(ctx()))
    assert log == ["a>", "b>", "upstream", "<b", "<a"]


def test_each_stage_is_bound_to_those_below_it_and_closed_in_order():
    log = []
    a, b = Recorder("a", log), Recorder("b", log)
    pipeline = Pipeline([a, b], terminal=None)
    assert a.below == ["b"] and b.below == []
    asyncio.run(pipeline.aclose())
    assert log == ["close a", "close b"]
    assert pipeline.find(Recorder) is a and pipeline.find(LedgerStage) is None


def test_a_streams_close_callbacks_run_inside_out_so_the_ledger_records_every_saving():
    records = []

    async def chunks():
        yield b"data"

    async def terminal(ctx):
        return Reply(status=200, headers=[], stream=chunks())

    stages = [LedgerStage(PriceBook.bundled(), [records.append]), Booker("outer", []), Booker("inner", [])]
    reply = asyncio.run(Pipeline(stages, terminal)(ctx()))
    reply.closed()
    (record,) = records
    assert record.savings_micro_usd == {"inner": 7, "outer": 7}
    assert list(record.savings_micro_usd) == ["inner", "outer"]


def test_a_stage_that_changes_the_request_drops_the_raw_bytes():
    context = ctx()
    assert context.body_bytes() == orjson.dumps(BODY)
    context.replace_body({**BODY, "max_tokens": 5})
    assert orjson.loads(context.body_bytes())["max_tokens"] == 5
    assert context.original_body["max_tokens"] == 10


def test_ledger_prices_the_reply_and_adds_savings_to_the_counterfactual():
    book = PriceBook.bundled()
    records = []
    usage = Usage(input_tokens=1000, output_tokens=100, cache_read_input_tokens=5000)

    async def terminal(ctx):
        ctx.savings.add("prompt_cache", 12_345)
        return Reply(status=200, headers=[], body=b"{}", usage=usage, upstream_request_id="req_1")

    asyncio.run(Pipeline([LedgerStage(book, [records.append])], terminal)(ctx()))
    (record,) = records
    expected = book.cost("claude-sonnet-4-6", usage).micro_usd
    # 1000 x $3 + 100 x $15 + 5000 x $0.30, per million = 0.003 + 0.0015 + 0.0015 = $0.006
    assert expected == 6000
    assert record.cost_micro_usd == expected
    assert record.counterfactual_micro_usd == expected + 12_345
    assert record.savings_micro_usd == {"prompt_cache": 12_345}
    assert record.upstream_request_id == "req_1" and record.status == 200


def test_ledger_records_errors_raised_below_it():
    records = []

    async def terminal(ctx):
        raise OverloadedError("busy")

    with pytest.raises(OverloadedError):
        asyncio.run(Pipeline([LedgerStage(PriceBook.bundled(), [records.append])], terminal)(ctx()))
    assert records[0].status == 529 and records[0].error_type == "overloaded_error" and records[0].cost_micro_usd == 0


def test_a_stream_is_recorded_when_it_closes():
    records = []

    async def chunks():
        yield b"data"

    async def terminal(ctx):
        return Reply(status=200, headers=[], stream=chunks())

    reply = asyncio.run(Pipeline([LedgerStage(PriceBook.bundled(), [records.append])], terminal)(ctx()))
    assert records == []  # not yet: the stream is still open
    reply.usage = Usage(input_tokens=10, output_tokens=3)
    reply.closed()
    assert records[0].output_tokens == 3 and records[0].stream is False
