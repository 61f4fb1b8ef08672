"""Where pruning keeps the summaries a cheap model wrote: in process (default) or in Redis (shared by replicas).

A summary replaces a span of history in the pruned prompt, so every request of the conversation from that
compaction point on must carry the *same* text: otherwise the prompt prefix changes and the prompt cache is
written again. The key is a hash of the history it replaces (``pruner.region_digest``), so the text is computed
once per compaction point. With several gateway replicas behind a load balancer, the turns of one conversation
land on different replicas; with the in-process store each would ask for (and pay for) its own summary and send
a different prefix. ``RedisSummaryStore`` shares them: the replica that reaches a compaction point stores the
summary, the others read it. A conversation's turns arrive one after another, so two replicas computing the same
point at the same moment is not a case worth a lock.

Redis down means "not stored": the summary is computed again (and kept locally), never an error.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from clawback.storage.redis_link import RedisCircuit, connect

__all__ = ["MemorySummaryStore", "RedisSummaryStore", "SummaryStore"]


class SummaryStore(Protocol):
    async def get(self, key: str) -> str | None: ...

    async def put(self, key: str, value: str) -> None: ...

    async def aclose(self) -> None: ...


class MemorySummaryStore:
    """Summaries by the hash of the history they replace; bounded, least recently used out first."""

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._items: OrderedDict[str, str] = OrderedDict()

    async def get(self, key: str) -> str | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    async def put(self, key: str, value: str) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)

    async def aclose(self) -> None:
        self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class RedisSummaryStore:
    """Shared by every replica, with the in-process store in front (a summary, once read, is read locally)."""

    def __init__(self, url: str, *, prefix: str = "clawback:sum:", ttl_s: float = 7 * 86400,
                 timeout_s: float = 0.05) -> None:  # fmt: skip
        self.prefix = prefix
        self.ttl_ms = int(ttl_s * 1000)
        self.redis = connect(url, timeout_s)
        self.local = MemorySummaryStore()
        self.circuit = RedisCircuit("pruning summaries")

    async def get(self, key: str) -> str | None:
        value = await self.local.get(key)
        if value is not None or not self.circuit.available:
            return value
        try:
            stored = await self.redis.get(self.prefix + key)
        except Exception as exc:  # down, timed out, refused: not stored (CancelledError is not an Exception)
            self.circuit.failed(exc)
            return None
        if stored is None:
            return None
        text = stored.decode() if isinstance(stored, bytes) else str(stored)
        await self.local.put(key, text)
        return text

    async def put(self, key: str, value: str) -> None:
        await self.local.put(key, value)
        if not self.circuit.available:
            return
        try:
            await self.redis.set(self.prefix + key, value.encode(), px=self.ttl_ms)
        except Exception as exc:
            self.circuit.failed(exc)

    async def aclose(self) -> None:
        await self.redis.aclose()
