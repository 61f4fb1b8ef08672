"""Fair sharing of one upstream key's concurrency between tenants.

Calls that find every slot taken wait in a queue per *flow* (a tenant: its clawback key and feature). When a
slot frees, it goes to the head of the backlogged flow with the smallest virtual time, and that flow's virtual
time advances by ``1 / weight``: start-time fair queueing (Goyal et al.), the scheme behind weighted fair
queueing in routers. A flow that was idle enters at the current virtual time, so it is served at the next free
slot rather than after everything a batch job queued before it: one batch job of 1,000 calls cannot starve an
interactive tenant, and two flows with weights 3 and 1 share a saturated upstream 3:1.

A slot is also bounded per model (``model_caps``): the head of a flow whose model is at its cap is skipped, not
waited on, so it does not block other models. The total limit is read from the adaptive ``AimdLimit`` at every
decision. With free slots and nobody waiting, ``try_acquire`` takes one without allocating anything.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["FairScheduler", "QueueTimeout"]


class QueueTimeout(Exception):
    """No slot freed before the request's deadline."""


@dataclass(slots=True)
class _Waiter:
    model: str
    future: asyncio.Future[None]


@dataclass(slots=True)
class _Flow:
    weight: float
    vtime: float = 0.0
    waiting: deque[_Waiter] = field(default_factory=deque)


class FairScheduler:
    def __init__(self, limit: Callable[[], int], model_caps: Mapping[str, int]) -> None:
        self.limit = limit
        self.model_caps = dict(model_caps)
        self.in_flight = 0
        self.by_model: dict[str, int] = {}
        self._flows: dict[str, _Flow] = {}
        self._queued = 0
        self._vclock = 0.0
        self.peak_in_flight = 0

    @property
    def queued(self) -> int:
        return self._queued

    def _room(self, model: str) -> bool:
        if self.in_flight >= self.limit():
            return False
        cap = self.model_caps.get(model)
        return cap is None or self.by_model.get(model, 0) < cap

    def _take(self, model: str) -> None:
        self.in_flight += 1
        self.by_model[model] = self.by_model.get(model, 0) + 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def _flow(self, name: str, weight: float) -> _Flow:
        flow = self._flows.get(name)
        if flow is None:
            flow = self._flows[name] = _Flow(weight, self._vclock)
        flow.weight = weight
        return flow

    def try_acquire(self, flow: str, weight: float, model: str) -> bool:
        """Take a slot now if one is free and nobody is waiting (the uncontended fast path)."""
        if self._queued or not self._room(model):
            return False
        self._take(model)
        entry = self._flow(flow, weight)
        entry.vtime = max(entry.vtime, self._vclock) + 1.0 / weight
        return True

    async def acquire(self, flow: str, weight: float, model: str, wait_s: float) -> None:
        """Wait for a slot, in fair order; ``QueueTimeout`` after ``wait_s`` seconds."""
        if self.try_acquire(flow, weight, model):
            return
        entry = self._flow(flow, weight)
        if not entry.waiting:
            entry.vtime = max(entry.vtime, self._vclock)
        waiter = _Waiter(model, asyncio.get_running_loop().create_future())
        entry.waiting.append(waiter)
        self._queued += 1
        self._pump()
        try:
            await asyncio.wait_for(asyncio.shield(waiter.future), max(0.0, wait_s))
        except TimeoutError:
            if waiter.future.done() and not waiter.future.cancelled():
                return  # granted at the last moment: keep it
            waiter.future.cancel()
            self._forget(entry, waiter)
            raise QueueTimeout from None
        except BaseException:  # cancelled (the client went away)
            if waiter.future.done() and not waiter.future.cancelled():
                self.release(model)  # granted as we gave up: hand the slot on
            else:
                waiter.future.cancel()
                self._forget(entry, waiter)
            raise

    def _forget(self, entry: _Flow, waiter: _Waiter) -> None:
        try:
            entry.waiting.remove(waiter)
        except ValueError:
            return
        self._queued -= 1

    def release(self, model: str) -> None:
        self.in_flight -= 1
        self.by_model[model] = self.by_model.get(model, 1) - 1
        self._pump()

    def _pump(self) -> None:
        while self._queued and self.in_flight < self.limit():
            best: _Flow | None = None
            for entry in self._flows.values():
                if not entry.waiting:
                    continue
                head = entry.waiting[0]
                cap = self.model_caps.get(head.model)
                if cap is not None and self.by_model.get(head.model, 0) >= cap:
                    continue
                if best is None or entry.vtime < best.vtime:
                    best = entry
            if best is None:
                return
            waiter = best.waiting.popleft()
            self._queued -= 1
            if waiter.future.done():  # given up already
                continue
            self._take(waiter.model)
            self._vclock = best.vtime
            best.vtime += 1.0 / best.weight
            waiter.future.set_result(None)
