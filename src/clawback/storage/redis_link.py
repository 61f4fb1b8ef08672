"""What every Redis-backed store shares: a client that gives up fast, and a breaker that stops asking.

Redis is an optimization in clawback, never a dependency: a Redis that is down, slow or refusing is treated as
"nothing stored" by every store. Two things make that cheap. Each command times out after ``timeout_s`` (tens
of milliseconds, not redis-py's default of waiting forever), and after a failure ``RedisCircuit`` answers "not
available" for ``open_s`` so that an outage costs one timeout a second rather than one per request.
"""

from __future__ import annotations

import logging
import time
from typing import Any

__all__ = ["RedisCircuit", "connect"]

log = logging.getLogger("clawback.redis")


def connect(url: str, timeout_s: float) -> Any:
    """An asyncio redis-py client for ``url`` whose commands and connects give up after ``timeout_s``."""
    import redis.asyncio as aioredis  # imported here: only deployments that use Redis pay for the import

    return aioredis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False
    )


class RedisCircuit:
    """Open for ``open_s`` after a failure; ``what`` names the store in the warning (once per outage)."""

    def __init__(self, what: str, open_s: float = 1.0) -> None:
        self.what = what
        self.open_s = open_s
        self.errors = 0
        self._down_until = 0.0

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def failed(self, exc: BaseException) -> None:
        self.errors += 1
        if self.available:
            log.warning("%s: Redis unavailable (%s); carrying on without it for %.0f s", self.what, exc, self.open_s)
        self._down_until = time.monotonic() + self.open_s
