"""A circuit breaker per upstream: stop sending to an upstream that keeps failing, probe it, resume.

Closed: every call goes. ``failures`` consecutive upstream failures (5xx, 529, connection errors and timeouts;
a 4xx is an answer, and counts as a success) open it. Open: nothing is sent for ``cooldown`` seconds; then one
call goes as a probe (half-open) while the others wait; its success closes the circuit, its failure opens it
again with the cooldown doubled (up to ``max_cooldown``).

Callers wait rather than fail fast when their deadline allows: the breaker is there to stop hammering an
upstream that is down, and a request that can still be answered within its deadline should be. A request
whose deadline ends before the circuit can close fails at once with the reason (``CircuitOpen``).

What counts as "keeps failing": ``failures`` consecutive failures, and no call still in flight that was sent
before the first of them. The second half matters because failures are fast and successes slow: a 529 comes back
in milliseconds while a good answer takes seconds, so under random faults a run of ten fast failures lands at the
start of every wave of calls, before any of that wave's successes can. Such a run is not evidence while older
calls are still out; once every call sent before it has failed too (or none was out), it is: an upstream that is
down fails every call, the slow ones included, and is cut off after ``failures`` of them. A flaky upstream is
left to the retries (a failure rate over a window was the alternative, and it opened on the same timing bias).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["CircuitBreaker", "CircuitOpen"]

_PROBE_POLL_S = 0.05


class CircuitOpen(Exception):
    def __init__(self, retry_in: float) -> None:
        super().__init__(f"circuit open for {retry_in:.1f} s more")
        self.retry_in = retry_in


class CircuitBreaker:
    def __init__(
        self, failures: int, cooldown: float, max_cooldown: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = failures
        self.base_cooldown = cooldown
        self.max_cooldown = max_cooldown
        self.clock = clock
        self.consecutive = 0
        self.cooldown = cooldown
        self.open_until: float | None = None
        self.probing = False
        self.opened = 0
        self._sent = 0
        self._in_flight: set[int] = set()
        self._streak_mark = 0
        """The last call sent when the current run of failures began: calls up to it predate the run."""

    @property
    def state(self) -> str:
        if self.open_until is None:
            return "closed"
        return "half_open" if self.clock() >= self.open_until else "open"

    async def admit(self, deadline: float) -> bool:
        """Wait until a call may go; True when it goes as the half-open probe. Raises ``CircuitOpen``."""
        while True:
            if self.open_until is None:
                return False
            now = self.clock()
            if now >= self.open_until and not self.probing:
                self.probing = True
                return True
            # Open: sleep until the cooldown ends. Half-open with a probe out: look again shortly (polling, not
            # an asyncio.Event, so that the breaker is not bound to one event loop: a wrapped AsyncAnthropic may
            # be used from several).
            wake = self.open_until if now < self.open_until else now + _PROBE_POLL_S
            if (self.open_until if now < self.open_until else now + self.cooldown) >= deadline:
                raise CircuitOpen(max(0.0, self.open_until - now))
            await asyncio.sleep(max(0.0, wake - now))

    def sent(self) -> int:
        """A call goes upstream: its number, to hand back to ``record`` (or ``forget``)."""
        self._sent += 1
        self._in_flight.add(self._sent)
        return self._sent

    def forget(self, call: int) -> None:
        self._in_flight.discard(call)

    def record(self, ok: bool, *, probe: bool, call: int) -> None:
        self._in_flight.discard(call)
        if ok:
            self.consecutive = 0
            if self.open_until is not None and (probe or not self.probing):
                self.open_until, self.probing, self.cooldown = None, False, self.base_cooldown
            return
        if self.consecutive == 0:
            self._streak_mark = self._sent
        self.consecutive += 1
        if probe:
            self.probing = False
            self.cooldown = min(self.cooldown * 2, self.max_cooldown)
            self.open_until = self.clock() + self.cooldown
        elif self.open_until is None and self.consecutive >= self.threshold and self._older_calls_done():
            self.open_until = self.clock() + self.cooldown
            self.opened += 1

    def _older_calls_done(self) -> bool:
        return not self._in_flight or min(self._in_flight) > self._streak_mark

    def release_probe(self) -> None:
        """The probe ended without an outcome (cancelled): let another call probe."""
        self.probing = False
