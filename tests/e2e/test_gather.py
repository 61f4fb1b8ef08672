"""``clawback.gather`` and ``agather`` through a wrapped official SDK client, against the simulator over HTTP:
results in order with per-item errors, the learned limits under load, and ``defer=True`` through the Message
Batches API booked at batch prices, one row per item."""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import pytest

import clawback
from clawback.config import SimulatorSettings
from clawback.gathering import BatchItemError, Outcome
from clawback.pricing import load_price_book
from clawback.storage.ledger import LedgerReader

MODEL = "claude-haiku-4-5"
KEY = "sk-ant-gather-test"


def request(n: int, **extra: object) -> dict[str, object]:
    return {"model": MODEL, "max_tokens": 20, "messages": [{"role": "user", "content": f"Score lead {n}"}], **extra}


def rows(settings):  # type: ignore[no-untyped-def]
    with LedgerReader(settings.ledger.url) as reader:
        return reader.rows()


def test_gather_returns_in_order_with_per_item_errors(simulator, gateway_settings):
    items = [request(n) for n in range(12)]
    items[5] = request(5, model="claude-nonexistent-1")
    with clawback.wrap(anthropic.Anthropic(base_url=simulator.url, api_key=KEY, max_retries=0),
                       settings=gateway_settings) as client:  # fmt: skip
        outcomes = clawback.gather(client, items, concurrency=4, progress=False)
    assert [o.index for o in outcomes] == list(range(12))
    assert [o.ok for o in outcomes] == [n != 5 for n in range(12)]
    assert isinstance(outcomes[5].error, anthropic.NotFoundError)
    assert all("Score lead" in o.message.content[0].text for o in outcomes if o.message)  # type: ignore[union-attr]
    assert len(rows(gateway_settings)) == 12


@pytest.fixture
def simulator_settings() -> SimulatorSettings:
    # A small concurrency limit: the async burst below is more than the upstream takes at once.
    return SimulatorSettings(seed=7, batch_processing_s=0.3, ttft_ms=50, max_concurrent_requests=5)


def test_agather_stays_within_the_learned_limit(simulator, gateway_settings):
    settings = gateway_settings.model_copy(update={"dispatch": gateway_settings.dispatch.model_copy(
        update={"max_attempts": 8, "backoff_initial_s": 0.01, "backoff_max_s": 0.05})})  # fmt: skip

    async def run() -> list[Outcome]:
        async with clawback.wrap(anthropic.AsyncAnthropic(base_url=simulator.url, api_key=KEY, max_retries=0),
                                 settings=settings) as client:  # fmt: skip
            return await clawback.agather(client, [request(n) for n in range(40)], progress=False)

    outcomes = asyncio.run(run())
    assert [o.ok for o in outcomes] == [True] * 40  # the upstream's 429s were absorbed, none reached an item
    totals = httpx.get(f"{simulator.url}/_simulator/totals").json()
    assert totals["peak_concurrent_requests"] == 5
    assert len(rows(settings)) == 40


def test_deferred_items_go_through_the_batches_api_at_batch_prices(simulator, gateway_settings, sim_admin):
    items = [request(n) for n in range(10)]
    items[3] = request(3, model="claude-nonexistent-1")  # a bad item errors on its own
    with clawback.wrap(anthropic.Anthropic(base_url=simulator.url, api_key=KEY, max_retries=0),
                       settings=gateway_settings) as client:  # fmt: skip
        outcomes = clawback.gather(client, items, defer=True, progress=False, poll_initial_s=0.1)
        batch_id = client.messages.batches.list().data[0].id
        list(client.messages.batches.results(batch_id))  # fetched again: booked once
    assert [o.index for o in outcomes] == list(range(10))
    assert [o.ok for o in outcomes] == [n != 3 for n in range(10)]
    assert isinstance(outcomes[3].error, BatchItemError) and outcomes[3].error.kind == "errored"
    billed = [b for b in sim_admin.get("/_simulator/requests").json() if b["batch"]]
    booked = [r for r in rows(gateway_settings) if r.batch]
    assert len(booked) == 10  # every item, under its own id, once
    assert {r.request_id for r in booked} == {f"{batch_id}/item-{n}" for n in range(10)}
    succeeded = [r for r in booked if r.status == 200]
    assert len(succeeded) == 9
    assert sum(r.cost_micro_usd for r in succeeded) == sum(b["cost_micro_usd"] for b in billed if b["status"] == 200)
    book = load_price_book()
    for row in succeeded:
        usage = clawback.Usage(row.input_tokens, row.output_tokens)
        assert row.cost_micro_usd == book.cost(MODEL, usage, batch=True).micro_usd
        assert row.cost_micro_usd * 2 == pytest.approx(book.cost(MODEL, usage).micro_usd, abs=1)  # 50 % off


def test_deferred_work_past_its_timeout_is_cancelled_item_by_item(simulator, gateway_settings):
    simulator.server.config.app.api.settings.batch_processing_s = 30.0
    with clawback.wrap(anthropic.Anthropic(base_url=simulator.url, api_key=KEY, max_retries=0),
                       settings=gateway_settings) as client:  # fmt: skip
        outcomes = clawback.gather(client, [request(n) for n in range(4)], defer=True, progress=False,
                                   timeout_s=0.2, poll_initial_s=0.1)  # fmt: skip
    assert all(isinstance(o.error, BatchItemError) and o.error.kind == "canceled" for o in outcomes)
