"""The dispatch stage's parts on their own: retry rules, the adaptive limit, learned buckets, breaker, fair queue."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import orjson
import pytest

from clawback.pipeline.dispatch.breaker import CircuitBreaker, CircuitOpen
from clawback.pipeline.dispatch.fairness import FairScheduler, QueueTimeout
from clawback.pipeline.dispatch.limits import AimdLimit, LearnedBuckets
from clawback.pipeline.dispatch.retry import backoff_delay, judge_status, server_delay


def _error(kind: str, code: str | None = None) -> bytes:
    error: dict[str, object] = {"type": kind, "message": "x"}
    if code:
        error["details"] = {"error_code": code}
    return orjson.dumps({"type": "error", "error": error})


@pytest.mark.parametrize(
    ("status", "headers", "body", "retry", "reason"),
    [
        (429, {}, _error("rate_limit_error"), True, "rate_limited"),
        (429, {}, _error("rate_limit_error", "enforced_spend_limit_reached"), False, "spend_limit"),
        (429, {"x-should-retry": "false"}, _error("rate_limit_error"), False, "rate_limited"),
        (500, {}, _error("api_error"), True, "server_error"),
        (503, {}, b"", True, "server_error"),
        (529, {}, _error("overloaded_error"), True, "overloaded"),
        (529, {"x-should-retry": "false"}, b"", False, "overloaded"),
        (400, {"x-should-retry": "true"}, _error("invalid_request_error"), False, "client_error"),
        (408, {}, b"", False, "client_error"),
        (409, {}, b"", False, "client_error"),
        (413, {}, b"", False, "client_error"),
    ],
)
def test_what_is_retried(status, headers, body, retry, reason):
    verdict = judge_status(status, headers, body)
    assert (verdict.retry, verdict.reason) == (retry, reason)


def test_server_delay_reads_ms_then_seconds_then_dates_within_60s():
    assert server_delay({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert server_delay({"retry-after": "2"}) == 2.0
    assert server_delay({"retry-after": "61"}) is None  # out of range: the SDK falls back to its backoff
    assert server_delay({"retry-after": "-1"}) is None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    when = format_datetime(now + timedelta(seconds=5), usegmt=True)
    assert server_delay({"retry-after": when}, now_wall=now.timestamp()) == pytest.approx(5.0)
    assert server_delay({}) is None


def test_backoff_is_the_sdks_and_never_shorter_than_asked():
    rng = random.Random(1)
    delays = [backoff_delay(n, initial=0.5, maximum=8.0, asked=None, rng=rng) for n in range(1, 8)]
    for n, delay in enumerate(delays, start=1):
        base = min(0.5 * 2 ** (n - 1), 8.0)
        assert 0.75 * base <= delay <= base
    for _ in range(50):
        assert 3.0 <= backoff_delay(1, initial=0.5, maximum=8.0, asked=3.0, rng=rng) <= 3.3


def test_aimd_learns_a_concurrency_ceiling_it_has_no_header_for():
    """A simulated upstream that holds 50: the limit settles at 50 and probes above it only rarely."""
    limit = AimdLimit(64, minimum=1, maximum=1000, probe_rounds=5)
    capacity = 50
    refusals = 0
    for _round in range(40):  # each round: fill the limit, the excess is refused, the rest succeed
        sent = limit.limit
        accepted = min(sent, capacity)
        for in_flight in range(sent - 1, accepted - 1, -1):  # refusals come back first, one by one
            limit.on_refusal(in_flight)
            refusals += 1
        for _ in range(accepted):
            limit.on_success(in_flight=limit.limit)
    assert limit.ceiling == capacity
    assert capacity <= limit.limit <= capacity + 1
    assert refusals <= 14 + 40 // 5 + 2  # the first overshoot, then about one probe per five rounds


def test_aimd_slow_start_grows_from_a_low_start_only_while_the_limit_is_used():
    limit = AimdLimit(4, minimum=1, maximum=100, probe_rounds=5)
    for _ in range(10):
        limit.on_success(in_flight=1)  # mostly idle: no evidence that more would help
    assert limit.limit == 4
    for _ in range(10):
        limit.on_success(in_flight=limit.limit)
    assert limit.limit == 14


def _requests(limit: int, remaining: int) -> dict[str, str]:
    return {"anthropic-ratelimit-requests-limit": str(limit), "anthropic-ratelimit-requests-remaining": str(remaining)}


def test_buckets_learn_from_headers_pace_and_block():
    now = [100.0]
    buckets = LearnedBuckets(clock=lambda: now[0])
    assert buckets.wait_for("k", "m", {"requests": 1}) == 0  # nothing known: no pacing
    buckets.observe("k", "m", _requests(60, 1))
    reservation = buckets.reserve("k", "m", {"requests": 1})
    assert buckets.wait_for("k", "m", {"requests": 1}) == pytest.approx(1.0)  # 60/min refills one a second
    now[0] += 0.5
    assert buckets.wait_for("k", "m", {"requests": 1}) == pytest.approx(0.5)
    buckets.settle(reservation, _requests(60, 30), "k", "m")
    assert buckets.wait_for("k", "m", {"requests": 1}) == 0
    exhausted = _requests(60, 0)
    assert buckets.explains(exhausted, {"requests": 1})
    buckets.observe("k", "m", exhausted)
    assert buckets.wait_for("k", "m", {"requests": 1}) == pytest.approx(1.0)  # refilling at 60 a minute
    buckets.block("k", "m", 5.0)  # a 429 said retry-after 5
    assert buckets.wait_for("k", "m", {"requests": 1}) == pytest.approx(5.0)
    tokens = {"anthropic-ratelimit-input-tokens-remaining": "5000"}
    assert buckets.explains(tokens, {"input-tokens": 9000})
    assert not buckets.explains(tokens, {"input-tokens": 5500})  # remainders are rounded down to the thousand


def test_breaker_opens_on_a_dead_upstream_not_on_fast_failures_while_older_calls_are_out():
    async def scenario() -> None:
        now = [0.0]
        breaker = CircuitBreaker(3, cooldown=1.0, max_cooldown=4.0, clock=lambda: now[0])
        slow = breaker.sent()  # a call still out (a slow success to come)
        for _ in range(5):
            breaker.record(False, probe=False, call=breaker.sent())
        assert breaker.state == "closed"
        breaker.record(True, probe=False, call=slow)
        assert breaker.consecutive == 0
        for _ in range(3):  # nothing older out: a dead upstream
            breaker.record(False, probe=False, call=breaker.sent())
        assert breaker.state == "open"
        with pytest.raises(CircuitOpen):
            await breaker.admit(deadline=0.5)  # the cooldown outlasts this request's deadline
        now[0] = 1.0
        assert await breaker.admit(deadline=10.0) is True  # half-open: this call is the probe
        breaker.record(False, probe=True, call=breaker.sent())
        assert breaker.state == "open" and breaker.cooldown == 2.0  # doubled
        now[0] = 3.0
        assert await breaker.admit(deadline=10.0) is True
        breaker.record(True, probe=True, call=breaker.sent())
        assert breaker.state == "closed" and breaker.cooldown == 1.0

    asyncio.run(scenario())


def test_fair_queue_serves_an_idle_tenant_next_and_shares_by_weight():
    async def scenario() -> None:
        scheduler = FairScheduler(lambda: 1, {})
        assert scheduler.try_acquire("batch", 1.0, "m")
        order: list[str] = []

        async def call(flow: str, weight: float) -> None:
            await scheduler.acquire(flow, weight, "m", 10.0)
            order.append(flow)
            await asyncio.sleep(0)
            scheduler.release("m")

        batch = [asyncio.ensure_future(call("batch", 1.0)) for _ in range(50)]
        await asyncio.sleep(0)
        interactive = asyncio.ensure_future(call("interactive", 1.0))
        await asyncio.sleep(0)
        scheduler.release("m")
        await asyncio.gather(*batch, interactive)
        assert order.index("interactive") <= 1  # not behind the 50 queued before it

        order.clear()
        assert scheduler.try_acquire("x", 1.0, "m")
        tasks = [asyncio.ensure_future(call("heavy", 3.0)) for _ in range(60)]
        tasks += [asyncio.ensure_future(call("light", 1.0)) for _ in range(60)]
        await asyncio.sleep(0)
        scheduler.release("m")
        await asyncio.gather(*tasks)
        first = order[:40]
        assert first.count("heavy") == 30 and first.count("light") == 10  # 3:1 while both are backlogged

    asyncio.run(scenario())


def test_fair_queue_caps_a_model_without_blocking_others_and_times_out():
    async def scenario() -> None:
        scheduler = FairScheduler(lambda: 10, {"opus": 1})
        assert scheduler.try_acquire("a", 1.0, "opus")
        assert not scheduler.try_acquire("a", 1.0, "opus")
        assert scheduler.try_acquire("a", 1.0, "haiku")  # another model is not held up
        with pytest.raises(QueueTimeout):
            await scheduler.acquire("a", 1.0, "opus", 0.05)
        assert scheduler.queued == 0
        waiting = asyncio.ensure_future(scheduler.acquire("a", 1.0, "opus", 5.0))
        await asyncio.sleep(0)
        scheduler.release("opus")
        await waiting
        assert scheduler.by_model["opus"] == 1 and scheduler.in_flight == 2

    asyncio.run(scenario())


def test_buckets_are_roomy_while_at_least_half_full_and_not_after_a_block():
    buckets = LearnedBuckets(clock=lambda: 0.0, sample_every=4)
    assert not buckets.roomy("k", "m")  # nothing known: the full path
    buckets.observe("k", "m", _requests(100, 60))
    assert buckets.roomy("k", "m")
    assert [buckets.sample() for _ in range(8)] == [False, False, False, True] * 2
    buckets.observe("k", "m", _requests(100, 40))
    assert not buckets.roomy("k", "m")
    buckets.observe("k", "m", _requests(100, 90))
    buckets.block("k", "m", 1.0)
    assert not buckets.roomy("k", "m")
