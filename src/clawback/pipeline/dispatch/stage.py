"""The dispatch stage: the innermost one, around the terminal upstream call.

Per attempt, in order: the circuit breaker admits it (``breaker``), the learned buckets have room for it or it
waits for their refill (``limits.LearnedBuckets``), a concurrency slot is free or it queues fairly for one
(``fairness.FairScheduler`` under the adaptive ``limits.AimdLimit``), and then it goes upstream. What comes back
teaches the limits (every reply's ``anthropic-ratelimit-*`` headers; a 429 no bucket explains cuts the
concurrency limit) and the breaker; a retryable failure (``retry``) is tried again after its backoff while the
request's deadline allows, with the slot given back in between so that others use it.

Never twice for the client: whatever happened upstream, the client's request is one ``RequestContext`` and so one
ledger row (the ledger stage, outermost, records once per request and its writer stores a request id once). When
there was more than one attempt, the row's labels say what each was: ``dispatch_attempts`` (the count),
``dispatch_history`` (``status error_type upstream-request-id`` per attempt, ``;``-separated) and, for attempts
the upstream accepted but whose answer was lost (a connection dropped mid-body, a timeout), their upstream ids
in ``dispatch_lost`` with ``dispatch_failed_billed`` saying what is known of their bill: error replies are not
billed by the API (0), a lost answer may have been (``unknown``). A stream is never retried once its first chunk
has been read (the terminal call reads it before returning, ``pipeline/forward.py``): from then on the bytes are
the client's. A request the gateway gave up on after retrying carries ``x-should-retry: false``, so an SDK client
does not multiply the attempts again (with ``max_attempts: 1`` errors are relayed as they came, for the client to
retry).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from clawback.api.errors import ApiError, ApiTimeoutError, OverloadedError, RateLimitError
from clawback.config import DispatchSettings
from clawback.pipeline.context import Reply, RequestContext
from clawback.pipeline.dispatch.breaker import CircuitBreaker, CircuitOpen
from clawback.pipeline.dispatch.deferred import DeferredBatcher
from clawback.pipeline.dispatch.fairness import FairScheduler, QueueTimeout
from clawback.pipeline.dispatch.limits import AimdLimit, LearnedBuckets, Reservation
from clawback.pipeline.dispatch.retry import backoff_delay, judge_status, server_delay
from clawback.pipeline.stage import CallNext, Chain
from clawback.pricing import PriceBook
from clawback.upstream.client import UpstreamUnavailable

__all__ = ["DispatchStage"]

#: Headers read from an upstream reply (only these are lower-cased into a dict).
_READ = frozenset(
    {"retry-after", "retry-after-ms", "x-should-retry"}
    | {f"anthropic-ratelimit-{k}-{f}" for k in ("requests", "input-tokens", "output-tokens")
       for f in ("limit", "remaining", "reset")}
)  # fmt: skip
_ONE_REQUEST = {"requests": 1.0}
#: Bytes per token for the input-bucket reservation: a cheap over-estimate (the next reply corrects it).
_BYTES_PER_TOKEN = 4


@dataclass(slots=True)
class _KeyState:
    limit: AimdLimit
    scheduler: FairScheduler


class DispatchStage:
    name = "dispatch"

    def __init__(
        self,
        settings: DispatchSettings,
        price_book: PriceBook,
        *,
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        self.price_book = price_book
        self.deferred = DeferredBatcher(settings, clock=clock)
        self.clock = clock
        self.rng = random.Random(seed)
        self.breaker = CircuitBreaker(
            settings.breaker_failures, settings.breaker_cooldown_s, settings.breaker_max_cooldown_s, clock=clock
        )
        self.buckets = LearnedBuckets(clock=clock)
        self._keys: dict[str, _KeyState] = {}
        self.counts: Counter[str] = Counter()

    # -- the stage protocol ---------------------------------------------------------------------------------
    def bind(self, chain: Chain) -> None:
        """Nothing to learn from the chain: dispatch is innermost and talks only to the terminal call."""

    async def aclose(self) -> None:
        """Stop polling deferred batches (the upstream connection pool belongs to the front door)."""
        await self.deferred.aclose()

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply:
        if ctx.endpoint not in ("messages", "count_tokens"):
            return await call_next(ctx)
        s = self.settings
        key = _key_of(ctx.upstream_auth)
        if self.deferred.wants(ctx):
            return self._book_deferral(ctx, await self.deferred.submit(ctx, key, call_next))
        state = self._state(key)
        model = (ctx.model or "-") if ctx.endpoint == "messages" else "count_tokens"
        flow, weight = self._flow(ctx)
        deadline = ctx.started + s.deadline_s
        roomy = self.buckets.roomy(key, model)
        needs = _ONE_REQUEST if roomy else self._needs(ctx, key, model)
        history: list[str] = []
        lost: list[str] = []
        attempt = 0
        while True:
            attempt += 1
            probe = await self._admit(deadline)
            if not roomy:
                await self._pace(key, model, needs, deadline)
            if not state.scheduler.try_acquire(flow, weight, model):
                try:
                    await state.scheduler.acquire(flow, weight, model, deadline - self.clock())
                except QueueTimeout:
                    if probe:
                        self.breaker.release_probe()
                    message = f"clawback: no upstream capacity within the request's deadline ({s.deadline_s:g} s)"
                    refusal = RateLimitError(message, headers={"retry-after": "1"})
                    raise self._give_up(ctx, history, lost, refusal) from None
            reservation = None if roomy else self.buckets.reserve(key, model, needs)
            call = self.breaker.sent()
            self.counts["attempts"] += 1
            try:
                reply = await call_next(ctx)
            except ApiError as exc:
                state.scheduler.release(model)
                self.buckets.settle(reservation, None, key, model)
                self.breaker.record(False, probe=probe, call=call)
                kind = "timeout" if isinstance(exc, ApiTimeoutError) else "connection"
                self.counts[f"upstream_{kind}"] += 1
                history.append(f"{kind} {exc.error_type} {exc.upstream_request_id or '-'}")
                if exc.upstream_request_id:
                    lost.append(exc.upstream_request_id)
                retryable = isinstance(exc, UpstreamUnavailable | ApiTimeoutError)
                if retryable and attempt < s.max_attempts and await self._backoff(attempt, None, deadline):
                    continue
                raise self._give_up(ctx, history, lost, exc) from None
            except BaseException:
                state.scheduler.release(model)
                self.buckets.settle(reservation, None, key, model)
                self.breaker.forget(call)
                if probe:
                    self.breaker.release_probe()
                raise
            if reply.status < 400:
                headers = _read_headers(reply.headers) if not roomy or self.buckets.sample() else {}
                self._succeeded(state, reservation, (key, model, headers), (probe, call), model, reply)
                if history:
                    history.append(f"{reply.status} - {reply.upstream_request_id or '-'}")
                    self._label(ctx, history, lost)
                return reply
            headers = _read_headers(reply.headers)
            self.buckets.settle(reservation, headers, key, model)
            roomy = roomy and self.buckets.roomy(key, model)  # a 429 may have blocked the buckets
            if not roomy:
                needs = self._needs(ctx, key, model)
            self.counts[f"upstream_{reply.status}"] += 1
            history.append(f"{reply.status} {reply.error_type or '-'} {reply.upstream_request_id or '-'}")
            verdict = judge_status(reply.status, headers, reply.body)
            if reply.status == 429 and verdict.reason == "rate_limited":
                if self.buckets.explains(headers, needs):
                    self.buckets.block(key, model, server_delay(headers) or 1.0)
                else:  # before the slot is given back (and taken by the next in the queue)
                    state.limit.on_refusal(state.scheduler.in_flight - 1)
            state.scheduler.release(model)
            self.breaker.record(reply.status < 500, probe=probe, call=call)
            if verdict.retry and attempt < s.max_attempts and await self._backoff(attempt, headers, deadline):
                continue
            if verdict.retry and attempt > 1:
                reply.headers.append(("x-should-retry", "false"))
            if len(history) > 1:
                self._label(ctx, history, lost)
            return reply

    # -- the steps of an attempt ----------------------------------------------------------------------------
    async def _admit(self, deadline: float) -> bool:
        if self.breaker.open_until is None:
            return False
        try:
            return await self.breaker.admit(deadline)
        except CircuitOpen as exc:
            self.counts["circuit_refused"] += 1
            raise OverloadedError(
                f"clawback: the upstream failed {self.breaker.threshold} times in a row; the circuit is open for "
                f"{exc.retry_in:.1f} s more, past this request's deadline",
                headers={"retry-after": str(max(1, round(exc.retry_in))), "x-should-retry": "false"},
            ) from None

    async def _pace(self, key: str, model: str, needs: dict[str, float], deadline: float) -> None:
        while (wait := self.buckets.wait_for(key, model, needs)) > 0:
            if self.clock() + wait > deadline:
                self.counts["rate_refused"] += 1
                raise RateLimitError(
                    f"clawback: the upstream's rate limit leaves no room for this request within its deadline "
                    f"({self.settings.deadline_s:g} s); next room in {wait:.1f} s",
                    headers={"retry-after": str(max(1, round(wait)))},
                )
            self.counts["paced"] += 1
            await asyncio.sleep(wait)

    async def _backoff(self, attempt: int, headers: dict[str, str] | None, deadline: float) -> bool:
        """Sleep before the next attempt; False when the deadline leaves no room for one."""
        s = self.settings
        asked = server_delay(headers) if headers else None
        delay = backoff_delay(attempt, initial=s.backoff_initial_s, maximum=s.backoff_max_s, asked=asked, rng=self.rng)
        if self.clock() + delay >= deadline:
            return False
        self.counts["retries"] += 1
        await asyncio.sleep(delay)
        return True

    def _succeeded(
        self,
        state: _KeyState,
        reservation: Reservation | None,
        learned: tuple[str, str, dict[str, str]],
        attempt: tuple[bool, int],
        model: str,
        reply: Reply,
    ) -> None:
        key, bucket_model, headers = learned
        self.buckets.settle(reservation, headers, key, bucket_model)
        probe, call = attempt
        self.breaker.record(True, probe=probe, call=call)
        state.limit.on_success(state.scheduler.in_flight)
        if reply.stream is None:
            state.scheduler.release(model)
        else:  # the slot is held while the stream runs; inner callbacks run before the ledger's
            reply.on_close(lambda _: state.scheduler.release(model))

    def _give_up(self, ctx: RequestContext, history: list[str], lost: list[str], exc: ApiError) -> ApiError:
        if len(history) > 1:  # retried here already: the client should not multiply the attempts
            exc.headers.setdefault("x-should-retry", "false")
        if len(history) > 1 or lost:
            self._label(ctx, history, lost)
        self.counts["gave_up"] += 1
        return exc

    def _book_deferral(self, ctx: RequestContext, reply: Reply) -> Reply:
        """A deferred call's saving: the standard price of its usage less the batch price the ledger books."""
        if reply.status == 200:
            request = ctx.request
            standard = self.price_book.cost(ctx.model, reply.usage, inference_geo=request.inference_geo,
                                            speed=request.speed).micro_usd  # fmt: skip
            batch = self.price_book.cost(ctx.model, reply.usage, batch=True, inference_geo=request.inference_geo,
                                         speed=request.speed).micro_usd  # fmt: skip
            ctx.savings.add(self.name, standard - batch)
        ctx.labels["dispatch_deferred"] = dict(reply.headers).get("x-clawback-batch-id", "-")
        return reply

    @staticmethod
    def _label(ctx: RequestContext, history: list[str], lost: list[str]) -> None:
        ctx.labels["dispatch_attempts"] = str(len(history))
        ctx.labels["dispatch_history"] = "; ".join(history)
        ctx.labels["dispatch_failed_billed"] = "unknown" if lost else "0"
        if lost:
            ctx.labels["dispatch_lost"] = ",".join(lost)

    # -- state --------------------------------------------------------------------------------------------
    def _state(self, key: str) -> _KeyState:
        state = self._keys.get(key)
        if state is None:
            s = self.settings
            limit = AimdLimit(
                s.initial_concurrency, minimum=s.min_concurrency, maximum=s.max_concurrency,
                probe_rounds=s.probe_rounds,
            )  # fmt: skip
            state = self._keys[key] = _KeyState(limit, FairScheduler(lambda: limit.limit, s.model_concurrency))
        return state

    def _flow(self, ctx: RequestContext) -> tuple[str, float]:
        tenant = ctx.tenant
        weights = self.settings.weights
        weight = 1.0
        if weights:
            weight = weights.get(f"feature:{tenant.feature}") or weights.get(f"key:{tenant.key_id}") or 1.0
        return f"{tenant.key_id}/{tenant.feature}", weight

    def _needs(self, ctx: RequestContext, key: str, model: str) -> dict[str, float]:
        if ctx.endpoint != "messages" or not self.buckets.known(key, model):
            return {"requests": 1.0}
        return {
            "requests": 1.0,
            "input-tokens": float(len(ctx.body_bytes()) // _BYTES_PER_TOKEN),
            "output-tokens": float(ctx.request.max_tokens),
        }

    def report(self) -> dict[str, Any]:
        """The learned limits, the breaker and the counters (``GET /admin/dispatch``, the bench)."""
        return {
            "breaker": {"state": self.breaker.state, "opened": self.breaker.opened,
                        "consecutive_failures": self.breaker.consecutive},
            "keys": {
                _fingerprint(key): {
                    "concurrency_limit": st.limit.limit, "in_flight": st.scheduler.in_flight,
                    "queued": st.scheduler.queued, "peak_in_flight": st.scheduler.peak_in_flight,
                    "cuts": st.limit.cuts, "slow_start": st.limit.slow_start, "ceiling": st.limit.ceiling,
                }
                for key, st in self._keys.items()
            },
            "buckets": {f"{_fingerprint(key)}/{model}": v for (key, model), v in self.buckets.snapshot().items()},
            "counts": dict(self.counts),
            "deferred": {"batches": self.deferred.batches, "items": self.deferred.items},
        }  # fmt: skip


def _key_of(auth: dict[str, str]) -> str:
    """Limits are per upstream credential (the API's are per organisation/workspace key)."""
    return next(iter(auth.values()), "") if len(auth) <= 1 else "|".join(sorted(auth.values()))


def _fingerprint(key: str) -> str:
    return "key:" + hashlib.sha256(key.encode()).hexdigest()[:12]


def _read_headers(headers: list[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers:
        lowered = name.lower()
        if lowered in _READ:
            out[lowered] = value
    return out
