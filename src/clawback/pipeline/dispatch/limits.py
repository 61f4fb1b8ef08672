"""What the upstream lets one key do: an adaptive concurrency limit and token buckets learned from its headers.

Two kinds of limit, because the upstream has two:

* **Rate limits** (requests, input tokens and output tokens per minute, per model class) are continuously
  refilling token buckets whose state every reply reports in ``anthropic-ratelimit-*`` headers (limit, remaining,
  reset). ``LearnedBuckets`` mirrors them: each reply resets the mirror to what the upstream said, minus what is
  still in flight; before a call, the request's share is reserved, and a call that would overdraw a bucket waits
  for its refill instead of collecting a 429. Only uncached input counts toward the input limit for current models
  (``ANTHROPIC_FACTS.md``), so the reservation is a cheap estimate of the whole body and the next reply corrects it.
* **Concurrency** has no header: an upstream that refuses calls past some number in progress says so with a 429
  that no bucket explains ("Number of concurrent connections has exceeded your rate limit"). ``AimdLimit`` learns
  that number as Netflix's concurrency-limits ``AIMDLimit`` and TCP do, additive increase and a decrease on each
  refusal: it grows while calls succeed with the limit in use (one per success until the first refusal, slow
  start; then about one per round trip, and past the level of the last refusal one per ``probe_rounds`` round
  trips), and a refusal brings it down to the calls still in flight when it arrives, which is what the upstream
  was holding. The decrease is measured rather than a fixed factor: a burst of refusals from one overshoot walks
  the limit down exactly to the upstream's capacity (each refusal leaves one call fewer in flight) instead of
  halving it per refusal, and a shrinking capacity (another client of the same key) is followed down as fast as it
  refuses. A gateway with no headers yet converges in one round trip.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["AimdLimit", "LearnedBuckets", "Reservation"]

KINDS = ("requests", "input-tokens", "output-tokens")


class AimdLimit:
    """One key's concurrency limit: grows while calls succeed with the limit in use, drops on a refusal."""

    def __init__(self, initial: int, *, minimum: int, maximum: int, probe_rounds: int) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.probe_rounds = probe_rounds
        self._limit = float(max(minimum, min(initial, maximum)))
        self.slow_start = True
        self.ceiling: int | None = None
        """What the upstream was last seen to hold: the calls still in flight after its last refusal."""
        self.cuts = 0

    @property
    def limit(self) -> int:
        return int(self._limit)

    def on_success(self, in_flight: int) -> None:
        if in_flight + 1 < self._limit:  # the limit is not what held anything back: no evidence to grow on
            return
        if self.slow_start:
            step = 1.0
        elif self.ceiling is not None and self._limit >= self.ceiling:
            step = 1.0 / (self._limit * self.probe_rounds)  # past the last refusal: probe, rarely
        else:
            step = 1.0 / self._limit  # about one per round trip
        self._limit = min(float(self.maximum), self._limit + step)

    def on_refusal(self, in_flight: int) -> None:
        """A call refused for concurrency; ``in_flight`` calls are still out (the refused one not counted)."""
        self.slow_start = False
        held = max(self.minimum, in_flight)
        if held < self._limit:
            self._limit = float(held)
            self.cuts += 1
        self.ceiling = held


@dataclass(slots=True)
class _Bucket:
    limit: float
    level: float
    updated: float
    reserved: float = 0.0
    blocked_until: float = 0.0

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + (now - self.updated) * self.limit / 60.0)
        self.updated = now

    def wait_for(self, amount: float, now: float) -> float:
        """Seconds until ``amount`` can be taken (0: now)."""
        if now < self.blocked_until:
            return self.blocked_until - now
        missing = min(amount, self.limit) - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.limit


@dataclass(slots=True)
class Reservation:
    """What one call took from its buckets, given back (to the reserved total) when its reply arrives."""

    bucket_key: tuple[str, str]
    amounts: dict[str, float] = field(default_factory=dict)


class LearnedBuckets:
    """Per (upstream key, model): the upstream's buckets as its headers last described them."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, sample_every: int = 4) -> None:
        self.clock = clock
        self.sample_every = sample_every
        self._buckets: dict[tuple[str, str], dict[str, _Bucket]] = {}
        self._roomy: dict[tuple[str, str], bool] = {}
        self._replies = 0

    def roomy(self, key: str, model: str) -> bool:
        """Every bucket of ``key`` / ``model`` was at least half full at the last reply read.

        The hot path's shortcut: a roomy call is neither paced nor reserved for, and only one reply in
        ``sample_every`` is read (``sample``); half of any bucket cannot drain in a few replies unless its limit is
        tiny, and a bucket under half full turns the full path back on at the next reply read.
        """
        return self._roomy.get((key, model), False)

    def sample(self) -> bool:
        """Whether to read this roomy reply's headers."""
        self._replies += 1
        return self._replies % self.sample_every == 0

    def known(self, key: str, model: str) -> bool:
        return (key, model) in self._buckets

    def wait_for(self, key: str, model: str, needs: Mapping[str, float]) -> float:
        """Seconds until every bucket can cover ``needs`` (0 when nothing is known yet)."""
        buckets = self._buckets.get((key, model))
        if buckets is None:
            return 0.0
        now = self.clock()
        wait = 0.0
        for kind, amount in needs.items():
            bucket = buckets.get(kind)
            if bucket is not None:
                bucket.refill(now)
                wait = max(wait, bucket.wait_for(amount, now))
        return wait

    def reserve(self, key: str, model: str, needs: Mapping[str, float]) -> Reservation:
        reservation = Reservation((key, model))
        buckets = self._buckets.get((key, model))
        if buckets is None:
            return reservation
        for kind, amount in needs.items():
            bucket = buckets.get(kind)
            if bucket is not None:
                bucket.level -= amount
                bucket.reserved += amount
                reservation.amounts[kind] = amount
        return reservation

    def settle(self, reservation: Reservation | None, headers: Mapping[str, str] | None, key: str, model: str) -> None:
        """The call's reply arrived (or it failed): release its reservation and learn from ``headers``."""
        if reservation is not None:
            buckets = self._buckets.get(reservation.bucket_key)
            if buckets is not None:
                for kind, amount in reservation.amounts.items():
                    buckets[kind].reserved = max(0.0, buckets[kind].reserved - amount)
        if headers:
            self.observe(key, model, headers)

    def observe(self, key: str, model: str, headers: Mapping[str, str]) -> None:
        """Reset the mirror to what the upstream reported, minus what is still reserved by calls in flight.

        The ``-reset`` headers are not used: they say when a bucket will be *full* again, and the mirror refills
        continuously at ``limit / 60`` a second, as the upstream's bucket does.

        Calls sent before this one may already be counted in ``remaining``, so the mirror errs low (never
        high), and the next reply sets it straight again: it cannot drift.
        """
        now = self.clock()
        buckets = self._buckets.setdefault((key, model), {})
        for kind in KINDS:
            limit = _number(headers.get(f"anthropic-ratelimit-{kind}-limit"))
            remaining = _number(headers.get(f"anthropic-ratelimit-{kind}-remaining"))
            if limit is None or limit <= 0 or remaining is None:
                continue
            bucket = buckets.get(kind)
            if bucket is None:
                bucket = buckets[kind] = _Bucket(limit, remaining, now)
            bucket.limit = limit
            bucket.level = min(limit, remaining) - bucket.reserved
            bucket.updated = now
        self._roomy[(key, model)] = bool(buckets) and all(
            b.level >= b.limit / 2 and b.blocked_until <= now for b in buckets.values()
        )

    def block(self, key: str, model: str, seconds: float) -> None:
        """A 429 whose headers show an exhausted bucket: nothing goes to this key and model for ``seconds``."""
        now = self.clock()
        self._roomy[(key, model)] = False
        for bucket in self._buckets.get((key, model), {}).values():
            if bucket.level <= 0:
                bucket.blocked_until = max(bucket.blocked_until, now + seconds)

    @staticmethod
    def explains(headers: Mapping[str, str], needs: Mapping[str, float]) -> bool:
        """Whether a 429's headers show a bucket short of what the call needed (a rate limit, not concurrency).

        Token remainders are rounded down to the thousand, so "short" allows for that rounding.
        """
        for kind in KINDS:
            remaining = _number(headers.get(f"anthropic-ratelimit-{kind}-remaining"))
            if remaining is None:
                continue
            slack = 0.0 if kind == "requests" else 1000.0
            if remaining <= 0 or remaining + slack < needs.get(kind, 1.0):
                return True
        return False

    def snapshot(self) -> dict[tuple[str, str], dict[str, dict[str, float]]]:
        now = self.clock()
        out: dict[tuple[str, str], dict[str, dict[str, float]]] = {}
        for (key, model), buckets in self._buckets.items():
            for bucket in buckets.values():
                bucket.refill(now)
            out[(key, model)] = {
                kind: {"limit": b.limit, "level": round(b.level, 1), "reserved": b.reserved}
                for kind, b in buckets.items()
            }
        return out


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None
