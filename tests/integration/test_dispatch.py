"""The dispatch stage against the simulator over real HTTP: retries booked once, streams never retried after their
first byte, the breaker, learned limits, and fair sharing while a batch job saturates the upstream."""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx
import pytest

from clawback.api.usage import Usage
from clawback.config import Settings, SimulatorSettings
from clawback.gateway.app import create_gateway_app
from clawback.pricing import load_price_book
from clawback.serving import BackgroundServer
from clawback.storage.ledger import LedgerReader, LedgerRecord
from clawback.upstream.simulator.app import create_simulator_app

MODEL = "claude-haiku-4-5"
FAST_RETRIES = {"backoff_initial_s": 0.01, "backoff_max_s": 0.05}


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": text}], **extra}


class Servers:
    def __init__(self, simulator: BackgroundServer, gateway: BackgroundServer, ledger_url: str) -> None:
        self.simulator, self.gateway, self.ledger_url = simulator, gateway, ledger_url
        self.api = simulator.server.config.app.api

    def post(self, payload: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.post(f"{self.gateway.url}/v1/messages", json=payload, headers=headers, timeout=60)

    def billed(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.simulator.url}/_simulator/requests").json())

    def rows(self) -> list[LedgerRecord]:
        """The ledger, complete: read after the gateway stopped (``stop`` flushes it)."""
        with LedgerReader(self.ledger_url) as reader:
            return reader.rows()


@contextlib.contextmanager
def servers(tmp_path: Path, simulator: SimulatorSettings, **dispatch: Any) -> Iterator[Servers]:
    with BackgroundServer(create_simulator_app(simulator)) as sim:
        ledger_url = f"sqlite:///{tmp_path / 'ledger.db'}"
        settings = Settings(
            gateway={"require_key": False}, upstream={"url": sim.url}, dispatch=dispatch,
            exact_cache={"enabled": False}, prompt_cache={"enabled": False}, pruning={"enabled": False},
            ledger={"url": ledger_url, "journal_path": str(tmp_path / "j"), "flush_interval_s": 0.05},
        )  # fmt: skip
        gateway = BackgroundServer(create_gateway_app(settings)).start()
        running = Servers(sim, gateway, ledger_url)
        try:
            yield running
        finally:
            gateway.stop()


def attempts_of(row: LedgerRecord) -> int:
    return int(row.labels.get("dispatch_attempts", "1"))


def test_retried_calls_are_booked_once_with_their_attempts(tmp_path):
    sim = SimulatorSettings(seed=3, error_rate_500=0.25, error_rate_529=0.25)
    with servers(tmp_path, sim, **FAST_RETRIES) as run:
        answers = [run.post(body(f"call {n}"), **{"x-clawback-user": f"u{n}"}) for n in range(30)]
        assert [a.status_code for a in answers] == [200] * 30
        billed = run.billed()
    rows = run.rows()
    assert sorted(r.user or "" for r in rows) == sorted(f"u{n}" for n in range(30))  # one row per call
    retried = [r for r in rows if "dispatch_attempts" in r.labels]
    assert retried, "with half the attempts failing some calls must have been retried"
    assert sum(attempts_of(r) for r in rows) == len(billed)  # every upstream attempt is in some row's labels
    for row in retried:
        history = row.labels["dispatch_history"].split("; ")
        assert len(history) == attempts_of(row) and history[-1].startswith("200 ")
        assert all(h.split()[0] in ("500", "529") for h in history[:-1])
        assert row.labels["dispatch_failed_billed"] == "0"  # error replies are not billed
        assert row.upstream_request_id == history[-1].split()[-1]
    assert sum(r.cost_micro_usd for r in rows) == sum(b["cost_micro_usd"] for b in billed)


def test_lost_replies_are_retried_and_recorded_with_their_upstream_ids(tmp_path):
    sim = SimulatorSettings(seed=5, connection_drop_rate=0.4)
    with servers(tmp_path, sim, **FAST_RETRIES) as run:
        answers = [run.post(body(f"call {n}")) for n in range(20)]
        assert [a.status_code for a in answers] == [200] * 20
        assert all(a.json()["type"] == "message" for a in answers)
        billed = run.billed()
    rows = run.rows()
    assert len(rows) == 20
    answered = {r.upstream_request_id for r in rows}
    lost_upstream = {b["request_id"] for b in billed if b["status"] == 200 and b["request_id"] not in answered}
    assert lost_upstream, "some replies must have been dropped"
    lost_ledger = {i for r in rows for i in r.labels.get("dispatch_lost", "").split(",") if i}
    assert lost_ledger == lost_upstream  # the ledger names every attempt the upstream billed and we never saw
    assert all(r.labels["dispatch_failed_billed"] == "unknown" for r in rows if "dispatch_lost" in r.labels)


def test_client_errors_and_spend_limits_are_not_retried(tmp_path):
    with servers(tmp_path, SimulatorSettings(seed=1), **FAST_RETRIES) as run:
        unknown = run.post(body("x", model="claude-nonexistent-9"))
        assert unknown.status_code == 404
        spend = run.post(body("y"), **{"x-simulator-fault": "spend_limit"})
        assert spend.status_code == 429
        assert spend.json()["error"]["details"] == {"error_code": "enforced_spend_limit_reached"}
        assert "x-should-retry" not in spend.headers  # relayed as it came: one attempt, nothing added
        overloaded = run.post(body("z"), **{"x-simulator-fault": "529"})  # every attempt fails
        assert overloaded.status_code == 529
        assert overloaded.headers["x-should-retry"] == "false"  # retried here: the client should not again
        assert len(run.billed()) == 1 + 1 + 8
    by_status = {r.status: r for r in run.rows()}
    assert "dispatch_attempts" not in by_status[404].labels and "dispatch_attempts" not in by_status[429].labels
    assert by_status[529].labels["dispatch_attempts"] == "8"


def test_the_sdk_does_not_multiply_attempts_the_gateway_gave_up_on(tmp_path):
    with servers(tmp_path, SimulatorSettings(seed=1), max_attempts=3, **FAST_RETRIES) as run:
        client = anthropic.Anthropic(base_url=run.gateway.url, api_key="sk-x", max_retries=2)
        with pytest.raises(anthropic.InternalServerError):
            client.messages.create(**body("busy"), extra_headers={"x-simulator-fault": "529"})
        assert len(run.billed()) == 3  # the gateway's three, none of the SDK's own
    (row,) = run.rows()
    assert row.labels["dispatch_attempts"] == "3"


def test_streams_retried_before_their_first_byte_parse_with_the_official_sdk(tmp_path):
    sim = SimulatorSettings(seed=11, error_rate_529=0.4, error_rate_500=0.2)
    with servers(tmp_path, sim, **FAST_RETRIES) as run:
        client = anthropic.Anthropic(base_url=run.gateway.url, api_key="sk-x", max_retries=0)
        texts = []
        for n in range(12):
            with client.messages.stream(**body(f"stream {n}")) as stream:
                texts.append(stream.get_final_message().content[0].text)
        assert len(texts) == 12 and all(texts)
        billed = run.billed()
    rows = run.rows()
    assert len(rows) == 12 and all(r.status == 200 and r.stream for r in rows)
    assert sum(attempts_of(r) for r in rows) == len(billed) > 12


def test_a_stream_that_breaks_after_its_first_byte_is_not_retried_and_is_recorded(tmp_path):
    sim = SimulatorSettings(seed=2, per_token_ms=5, output_tokens=40)
    with servers(tmp_path, sim, **FAST_RETRIES) as run:
        with httpx.stream("POST", f"{run.gateway.url}/v1/messages", json=body("s", stream=True),
                          headers={"x-simulator-fault": "drop"}, timeout=30) as response:  # fmt: skip
            assert response.status_code == 200
            text = response.read().decode()
        assert text.startswith("event: message_start") and text.count("event: message_start") == 1
        assert "event: error" in text and "message_stop" not in text
        billed = run.billed()
    assert len(billed) == 1  # not retried
    (row,) = run.rows()
    assert row.error_type == "overloaded_error" and row.status == 200
    assert row.upstream_request_id == billed[0]["request_id"]
    assert row.input_tokens == billed[0]["usage"]["input_tokens"]  # from message_start: what was seen is recorded
    assert "dispatch_attempts" not in row.labels


def test_breaker_stops_traffic_to_a_failing_upstream_then_probes_and_closes(tmp_path):
    sim = SimulatorSettings(seed=1, error_rate_500=1.0)
    settings = {"max_attempts": 1, "breaker_failures": 3, "breaker_cooldown_s": 2.0, "deadline_s": 0.3}
    with servers(tmp_path, sim, **settings) as run:
        assert [run.post(body(f"a{n}")).status_code for n in range(3)] == [500] * 3
        refused = run.post(body("while open"))
        assert refused.status_code == 529 and "circuit is open" in refused.json()["error"]["message"]
        assert len(run.billed()) == 3  # nothing reached the upstream while the circuit was open
        run.api.settings.error_rate_500 = 0.0  # the upstream recovers
        time.sleep(2.1)
        assert run.post(body("probe")).status_code == 200  # half-open: one probe, it succeeds, the circuit closes
        assert [run.post(body(f"b{n}")).status_code for n in range(3)] == [200] * 3
        assert len(run.billed()) == 3 + 4


def test_learned_rate_limits_pace_calls_instead_of_collecting_429s(tmp_path):
    sim = SimulatorSettings(seed=1, requests_per_minute=120)  # a bucket of 120, refilling 2 a second

    async def burst(url: str, count: int) -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one(n: int) -> int:
                async with session.post(url, json=body(f"b{n}")) as response:
                    await response.read()
                    return response.status

            return list(await asyncio.gather(*[one(n) for n in range(count)]))

    with servers(tmp_path, sim, **FAST_RETRIES) as run:
        url = f"{run.gateway.url}/v1/messages"
        assert asyncio.run(burst(url, 123)) == [200] * 123  # the 3 over the bucket were retried, not relayed
        first = sum(1 for b in run.billed() if b["status"] == 429)
        started = time.monotonic()
        assert asyncio.run(burst(url, 4)) == [200] * 4
        assert time.monotonic() - started >= 1.0  # paced by the learned bucket (2 a second) ...
        assert sum(1 for b in run.billed() if b["status"] == 429) == first  # ... without another 429


def test_an_interactive_tenant_is_not_starved_by_a_batch_job(tmp_path):
    """p50 of an interactive tenant's calls while a 1,000-call batch saturates the upstream's 25-call limit."""
    sim = SimulatorSettings(seed=1, ttft_ms=100, max_concurrent_requests=25)

    async def scenario(url: str) -> tuple[float, float, list[int]]:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

            async def call(tenant: str, n: int) -> tuple[int, float]:
                started = time.monotonic()
                async with session.post(url, json=body(f"{tenant} {n}"),
                                        headers={"x-clawback-feature": tenant}) as response:  # fmt: skip
                    await response.read()
                    return response.status, time.monotonic() - started

            idle = [(await call("interactive", n))[1] for n in range(10)]
            batch = asyncio.ensure_future(asyncio.gather(*[call("batch", n) for n in range(1000)]))
            await asyncio.sleep(1.0)  # the batch is queued and the upstream saturated
            busy = [(await call("interactive", 100 + n))[1] for n in range(10)]
            assert not batch.done(), "the batch must still be running while the interactive calls are measured"
            statuses = [status for status, _ in await batch]
            return statistics.median(idle), statistics.median(busy), statuses

    with servers(tmp_path, sim) as run:
        idle, busy, statuses = asyncio.run(scenario(f"{run.gateway.url}/v1/messages"))
    assert statuses == [200] * 1000
    assert busy <= 2 * idle, f"interactive p50 {busy * 1000:.0f} ms during the batch vs {idle * 1000:.0f} ms idle"


def test_identical_streams_in_flight_share_one_upstream_call(tmp_path):
    """N identical streamed calls at once: one upstream call, N valid event streams parsed by the official SDK,
    one ledger row each, the upstream's cost booked once and the followers' calls booked as saved."""
    sim = SimulatorSettings(seed=4, per_token_ms=20, output_tokens=30)
    request = body("Summarise the listing at 12 Oak St.")
    pinned = {"temperature": 0}  # what the exact cache's rules accept (sent as the body field it is)

    async def scenario(url: str) -> list[str]:
        client = anthropic.AsyncAnthropic(base_url=url, api_key="sk-x", max_retries=0)

        async def one() -> str:
            async with client.messages.stream(**request, extra_body=pinned) as stream:
                return (await stream.get_final_message()).content[0].text

        try:
            return list(await asyncio.gather(*[one() for _ in range(6)]))
        finally:
            await client.close()

    with servers(tmp_path, sim) as run:
        texts = asyncio.run(scenario(run.gateway.url))
        different = run.post(body("Another listing", temperature=0))  # not identical: its own call
        assert different.status_code == 200
        billed = run.billed()
    assert len(texts) == 6 and len(set(texts)) == 1 and texts[0]
    assert len(billed) == 2
    rows = run.rows()
    assert len(rows) == 7
    shared = [r for r in rows if r.upstream_request_id == billed[0]["request_id"]]
    assert len(shared) == 6 and all(r.status == 200 and r.stream for r in shared)
    leaders = [r for r in shared if r.cache_status != "coalesced"]
    followers = [r for r in shared if r.cache_status == "coalesced"]
    assert len(leaders) == 1 and len(followers) == 5
    assert leaders[0].cost_micro_usd == billed[0]["cost_micro_usd"] > 0
    assert all(f.cost_micro_usd == 0 and f.savings_micro_usd == {"coalesce": billed[0]["cost_micro_usd"]}
               for f in followers)  # fmt: skip


def test_sampled_requests_are_not_coalesced_unless_the_policy_says_so(tmp_path):
    sim = SimulatorSettings(seed=4, ttft_ms=200)
    request = body("Write a tagline for 12 Oak St.")  # sampled (no temperature 0): two callers want two answers

    async def burst(url: str) -> list[int]:
        async with aiohttp.ClientSession() as session:

            async def one() -> int:
                async with session.post(url, json=request) as response:
                    await response.read()
                    return response.status

            return list(await asyncio.gather(one(), one(), one()))

    with servers(tmp_path, sim) as run:
        assert asyncio.run(burst(f"{run.gateway.url}/v1/messages")) == [200] * 3
        assert len(run.billed()) == 3


def test_deferred_calls_are_answered_through_the_batches_api_at_batch_prices(tmp_path):
    """A feature marked deferrable (and a per-call header) goes through the Message Batches API: the client gets its
    Message as usual, the simulator bills batch items, the ledger books batch prices and the saving."""
    sim = SimulatorSettings(seed=9, batch_processing_s=0.3)
    settings = {"defer_features": {"overnight": True}, "defer_window_s": 0.2, "defer_poll_initial_s": 0.1}

    async def burst(url: str) -> list[tuple[int, dict[str, Any]]]:
        async with aiohttp.ClientSession() as session:

            async def one(n: int, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
                async with session.post(url, json=body(f"score lead {n}"), headers=headers) as response:
                    return response.status, await response.json()

            calls = [one(n, {"x-clawback-feature": "overnight"}) for n in range(4)]
            calls.append(one(4, {"x-clawback-defer": "true"}))
            calls.append(one(5, {"x-clawback-feature": "overnight", "x-clawback-defer": "false"}))  # opted out
            return list(await asyncio.gather(*calls))

    with servers(tmp_path, sim, **settings) as run:
        answers = asyncio.run(burst(f"{run.gateway.url}/v1/messages"))
        billed = run.billed()
    assert [status for status, _ in answers] == [200] * 6
    assert all(message["type"] == "message" for _, message in answers)
    batch_items = [b for b in billed if b["batch"]]
    assert len(batch_items) == 5 and len([b for b in billed if not b["batch"]]) == 1  # one batch, one direct call
    rows = run.rows()
    deferred = [r for r in rows if r.batch]
    assert len(rows) == 6 and len(deferred) == 5
    assert sorted(r.cost_micro_usd for r in deferred) == sorted(b["cost_micro_usd"] for b in batch_items)
    book = load_price_book()
    for row in deferred:
        standard = book.cost(MODEL, Usage(row.input_tokens, row.output_tokens)).micro_usd
        assert row.savings_micro_usd == {"dispatch": standard - row.cost_micro_usd}
        assert row.labels["dispatch_deferred"].startswith("msgbatch_")
