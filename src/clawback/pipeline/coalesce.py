"""The coalescing stage: identical requests in flight at the same time share one upstream call.

Which requests: those the exact cache's rules would answer from a stored reply (``exact_cache.cache_eligibility``:
its header, key, feature and default policy, ``deterministic`` unless configured), because sharing one answer
between identical requests is exactly what those rules allow; others only by policy (``coalesce.policy: all``,
or ``coalesce.features``). Identical means the exact cache's normalized key (tenant scope and namespace included:
one tenant never shares another's call) plus ``stream``, since a JSON reply and an event stream are different
replies to relay.

How: the first request of a key (the leader) goes down the pipeline as usual; an identical request arriving while
it is in flight (a follower) waits for the leader's reply instead of calling the upstream. A JSON reply or an error
is copied to every follower. A stream is read from the upstream by a pump task into a buffer that the leader's and
every follower's relay read from, event by event as it arrives (a follower that joins late starts from the first
byte), so one slow or departed client neither holds back nor cuts off the others; the upstream call is cancelled
only when every client of it has gone.

Booking: the leader's row carries the upstream's usage and cost, as any call. A follower reached no upstream: its
row has no usage, ``cache_status = "coalesced"``, and ``savings["coalesce"]`` = what its call would have cost
(the leader's usage priced for the follower's request by the pricing module), so every client's request is one row
and the upstream's bill is booked once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from clawback.api.errors import ApiError, error_from_status
from clawback.api.usage import Usage
from clawback.config import CoalesceSettings, ExactCacheSettings
from clawback.pipeline.context import Reply, RequestContext
from clawback.pipeline.exact_cache import cache_eligibility, request_key
from clawback.pipeline.stage import CallNext, Chain
from clawback.pricing import PriceBook

__all__ = ["CoalesceStage"]

COALESCED_HEADER = "x-clawback-coalesced"


@dataclass(slots=True)
class _Flight:
    """One upstream call and everyone waiting on it."""

    ready: asyncio.Future[None]
    reply: Reply | None = None
    error: ApiError | None = None
    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    readers: int = 0
    pump: asyncio.Task[None] | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class CoalesceStage:
    name = "coalesce"

    def __init__(self, settings: CoalesceSettings, exact_cache: ExactCacheSettings, price_book: PriceBook) -> None:
        self.settings = settings
        self.exact_cache = exact_cache
        self.price_book = price_book
        self._flights: dict[str, _Flight] = {}
        self.leaders = 0
        self.followers = 0

    def bind(self, chain: Chain) -> None:
        """Nothing to learn from the chain."""

    async def aclose(self) -> None:
        for flight in list(self._flights.values()):
            if flight.pump is not None:
                flight.pump.cancel()

    def report(self) -> dict[str, Any]:
        return {"leaders": self.leaders, "followers": self.followers, "in_flight": len(self._flights)}

    def _eligible(self, ctx: RequestContext) -> bool:
        feature = ctx.tenant.feature
        if feature is not None and feature in self.settings.features:
            return self.settings.features[feature]
        return self.settings.policy == "all" or cache_eligibility(self.exact_cache, ctx) == "on"

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply:
        if ctx.endpoint != "messages" or not self._eligible(ctx):
            return await call_next(ctx)
        key = request_key(ctx) + (":s" if ctx.stream else ":j")
        flight = self._flights.get(key)
        if flight is not None:
            return await self._follow(ctx, flight)
        flight = self._flights[key] = _Flight(asyncio.get_running_loop().create_future())
        self.leaders += 1
        try:
            reply = await call_next(ctx)
        except ApiError as exc:
            flight.error = exc
            self._land(key, flight)
            raise
        except BaseException:
            flight.error = error_from_status(500, "the shared upstream call was cancelled")
            self._land(key, flight)
            raise
        flight.reply = reply
        if reply.stream is None:
            self._land(key, flight)
            return reply
        flight.pump = asyncio.get_running_loop().create_task(self._pump(key, flight, reply.stream))
        flight.ready.set_result(None)
        reply.stream = self._read(flight)
        return reply

    def _land(self, key: str, flight: _Flight) -> None:
        """A whole reply (or an error) is in: release the followers; later arrivals make a new call."""
        flight.done = True
        if self._flights.get(key) is flight:
            del self._flights[key]
        if not flight.ready.done():
            flight.ready.set_result(None)

    async def _pump(self, key: str, flight: _Flight, source: AsyncIterator[bytes]) -> None:
        try:
            async for chunk in source:
                flight.chunks.append(chunk)
                flight.changed.set()
        finally:
            with contextlib.suppress(Exception):
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    await aclose()
            flight.done = True
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.changed.set()

    async def _read(self, flight: _Flight, on_end: Reply | None = None) -> AsyncIterator[bytes]:
        """One client's view of a shared stream: every chunk from the first, as the pump delivers them."""
        flight.readers += 1
        index = 0
        try:
            while True:
                while index < len(flight.chunks):
                    yield flight.chunks[index]
                    index += 1
                if flight.done:
                    return
                flight.changed.clear()
                if index < len(flight.chunks) or flight.done:
                    continue
                await flight.changed.wait()
        finally:
            flight.readers -= 1
            if flight.readers == 0 and not flight.done and flight.pump is not None:
                flight.pump.cancel()  # every client has gone: stop the upstream call
            if on_end is not None:
                self._settle_follower(on_end, flight, finished=index >= len(flight.chunks) and flight.done)

    async def _follow(self, ctx: RequestContext, flight: _Flight) -> Reply:
        self.followers += 1
        await asyncio.shield(flight.ready)
        ctx.cache_status = "coalesced"
        if flight.error is not None:
            exc = flight.error
            copy = error_from_status(exc.status, exc.message, exc.error_type)
            copy.headers.update(exc.headers)
            copy.details = exc.details
            raise copy
        leader = flight.reply
        assert leader is not None
        headers = [*leader.headers, (COALESCED_HEADER, "true")]
        follower = Reply(status=leader.status, headers=headers, upstream_request_id=leader.upstream_request_id)
        follower.ttft = time.monotonic() - ctx.started
        follower.error_type = leader.error_type
        follower.on_close(lambda _: self._book(ctx, leader.usage))
        if leader.stream is None:
            follower.body = leader.body
            follower.finished = True
            self._book(ctx, leader.usage)
            return follower
        follower.stream = self._read(flight, on_end=follower)
        return follower

    def _settle_follower(self, follower: Reply, flight: _Flight, *, finished: bool) -> None:
        leader = flight.reply
        follower.finished = finished and leader is not None and leader.finished
        if leader is not None:
            follower.error_type = leader.error_type
        if not finished and follower.error_type is None:
            follower.error_type = "client_disconnected"
        follower.closed()

    def _book(self, ctx: RequestContext, usage: Usage) -> None:
        """What the follower's call would have cost: the shared usage, priced for its request."""
        if ctx.savings.by_stage.get(self.name):
            return
        request = ctx.request
        cost = self.price_book.cost(ctx.model, usage, inference_geo=request.inference_geo, speed=request.speed)
        ctx.savings.add(self.name, cost.micro_usd)
