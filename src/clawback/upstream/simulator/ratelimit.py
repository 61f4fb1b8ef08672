"""Rate limits as the API enforces and reports them.

Anthropic uses token buckets: capacity is the per-minute limit and it refills continuously, so a client
that waits a fraction of a minute gets a fraction of its budget back. Every reply carries
``anthropic-ratelimit-{requests,input-tokens,output-tokens,tokens}-{limit,remaining,reset}`` (reset as an
RFC 3339 time at which the bucket is full again; token remainders rounded down to the thousand), and a 429
carries ``retry-after`` in whole seconds. For current models only uncached input counts toward the
input-tokens limit, so cache reads are never charged here.
Source: https://docs.anthropic.com/en/api/rate-limits
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from clawback.config import SimulatorSettings

__all__ = ["Bucket", "RateLimitExceeded", "RateLimiter"]


@functools.lru_cache(maxsize=1024)
def _rfc3339_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _rfc3339(epoch: float) -> str:
    """Whole seconds, as the API sends them; cached because every reply carries eight of these."""
    return _rfc3339_second(math.ceil(epoch))


@dataclass(slots=True)
class Bucket:
    limit: int
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.limit, self.level + (now - self.updated) * self.limit / 60.0)
        self.updated = now

    def seconds_until(self, amount: float) -> float:
        missing = amount - self.level
        return 0.0 if missing <= 0 else missing * 60.0 / self.limit

    def reset_at(self, wall: float) -> float:
        return wall + self.seconds_until(self.limit)


class RateLimitExceeded(Exception):
    def __init__(self, kind: str, retry_after: float, headers: dict[str, str]) -> None:
        super().__init__(kind)
        self.kind = kind
        self.retry_after = retry_after
        self.headers = headers


class RateLimiter:
    """Per-key buckets for requests, uncached input tokens and output tokens."""

    KINDS = ("requests", "input-tokens", "output-tokens")

    def __init__(
        self,
        settings: SimulatorSettings,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.limits = {
            "requests": settings.requests_per_minute,
            "input-tokens": settings.input_tokens_per_minute,
            "output-tokens": settings.output_tokens_per_minute,
        }
        self.clock = clock
        self.wall = wall
        self._buckets: dict[str, dict[str, Bucket]] = {}

    def _for(self, key: str) -> dict[str, Bucket]:
        buckets = self._buckets.get(key)
        if buckets is None:
            now = self.clock()
            buckets = {kind: Bucket(limit, float(limit), now) for kind, limit in self.limits.items()}
            self._buckets[key] = buckets
        return buckets

    def acquire(self, key: str, *, input_tokens: int, output_tokens_estimate: int) -> dict[str, str]:
        """Take one request and its uncached input; check the output bucket can cover ``max_tokens``.

        Raises ``RateLimitExceeded`` (nothing taken) when a bucket is short.
        """
        buckets = self._for(key)
        now = self.clock()
        for bucket in buckets.values():
            bucket.refill(now)
        wanted = {
            "requests": 1.0,
            "input-tokens": float(min(input_tokens, self.limits["input-tokens"])),
            "output-tokens": float(min(max(output_tokens_estimate, 1), self.limits["output-tokens"])),
        }
        for kind in self.KINDS:
            wait = buckets[kind].seconds_until(wanted[kind])
            if wait > 0:
                raise RateLimitExceeded(kind, wait, {**self._headers(buckets), "retry-after": str(math.ceil(wait))})
        buckets["requests"].level -= 1
        buckets["input-tokens"].level -= input_tokens
        return self._headers(buckets)

    def settle_output(self, key: str, output_tokens: int) -> None:
        """Charge the output actually generated."""
        bucket = self._for(key)["output-tokens"]
        bucket.refill(self.clock())
        bucket.level -= output_tokens

    def headers(self, key: str) -> dict[str, str]:
        buckets = self._for(key)
        now = self.clock()
        for bucket in buckets.values():
            bucket.refill(now)
        return self._headers(buckets)

    def _headers(self, buckets: dict[str, Bucket]) -> dict[str, str]:
        wall = self.wall()
        headers: dict[str, str] = {}
        for kind, bucket in buckets.items():
            remaining = max(0, int(bucket.level))
            if kind != "requests":
                remaining = remaining // 1000 * 1000
            headers[f"anthropic-ratelimit-{kind}-limit"] = str(bucket.limit)
            headers[f"anthropic-ratelimit-{kind}-remaining"] = str(remaining)
            headers[f"anthropic-ratelimit-{kind}-reset"] = _rfc3339(bucket.reset_at(wall))
        tokens_in, tokens_out = buckets["input-tokens"], buckets["output-tokens"]
        headers["anthropic-ratelimit-tokens-limit"] = str(tokens_in.limit + tokens_out.limit)
        remaining_tokens = max(0, int(tokens_in.level)) + max(0, int(tokens_out.level))
        headers["anthropic-ratelimit-tokens-remaining"] = str(remaining_tokens // 1000 * 1000)
        headers["anthropic-ratelimit-tokens-reset"] = _rfc3339(max(tokens_in.reset_at(wall), tokens_out.reset_at(wall)))
        return headers
