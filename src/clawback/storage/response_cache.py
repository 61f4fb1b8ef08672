"""Where the exact response cache keeps its replies: in process (default) or in Redis (shared by replicas).

Both backends hold ``CachedReply`` values under a key (the hash of the normalized request, tenant scope
included), each indexed by one namespace and any number of tags so that an operator can drop a whole family
of replies at once (``POST /admin/cache/invalidate``, ``clawback cache invalidate``).

Why it is shaped like this:

* The size bound is in bytes, not entries: a reply is anything from 200 bytes to a megabyte, and an entry
  count says nothing about memory. The oldest entries go first when the bound is crossed.
* Redis is an optimization, never a dependency: a Redis that is down, slow (``redis_timeout_s``, 50 ms by
  default) or answering garbage is a miss, not an error. After a failure the backend stops asking Redis for a
  second (a small circuit breaker) so that an outage does not add a timeout to every request.
* Redis writes and evictions run as one Lua script (atomic, one round trip): the entry, its size, the byte
  counter and the namespace/tag sets never disagree, whichever replica writes.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from clawback.api.usage import Usage
from clawback.storage.redis_link import RedisCircuit, connect

__all__ = ["CachedReply", "MemoryResponseCache", "RedisResponseCache", "ResponseCache"]

log = logging.getLogger("clawback.cache")


@dataclass(slots=True)
class CachedReply:
    """One stored reply: the Message JSON as the API sent it, with what the call cost in tokens."""

    key: str
    body: bytes
    model: str
    usage: Usage
    namespace: str
    tags: tuple[str, ...] = ()
    created_at: float = field(default_factory=time.time)
    expires_at: float = 0.0
    saved_micro_usd: int = 0
    """What the pipeline's stages below the cache saved on the stored call (the planner's caching, pruning): a
    hit adds it to the stored call's cost, so that it books what the caller's own request would have cost."""

    @property
    def size(self) -> int:
        return len(self.body) + len(self.key) + 64

    def dumps(self) -> bytes:
        meta = {
            "key": self.key,
            "model": self.model,
            "usage": self.usage.to_api(),
            "namespace": self.namespace,
            "tags": list(self.tags),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "saved_micro_usd": self.saved_micro_usd,
        }
        return orjson.dumps(meta) + b"\n" + self.body

    @classmethod
    def loads(cls, payload: bytes) -> CachedReply:
        head, _, body = payload.partition(b"\n")
        meta = orjson.loads(head)
        return cls(
            key=str(meta["key"]),
            body=body,
            model=str(meta["model"]),
            usage=Usage.from_api(meta.get("usage")),
            namespace=str(meta.get("namespace", "")),
            tags=tuple(str(t) for t in meta.get("tags", ())),
            created_at=float(meta.get("created_at", 0.0)),
            expires_at=float(meta.get("expires_at", 0.0)),
            saved_micro_usd=int(meta.get("saved_micro_usd", 0)),  # absent in entries stored before it existed
        )


class ResponseCache(Protocol):
    """What the exact-cache stage and the admin API need from a backend."""

    async def get(self, key: str) -> CachedReply | None: ...

    async def put(self, entry: CachedReply, ttl_s: float) -> bool: ...

    async def invalidate(
        self, *, key: str | None = None, namespace: str | None = None, tag: str | None = None
    ) -> int: ...

    def stats(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


class MemoryResponseCache:
    """In-process LRU bounded in bytes; lives and dies with the gateway process."""

    def __init__(self, *, max_bytes: int, clock: Any = time.time) -> None:
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[str, CachedReply] = OrderedDict()
        self._namespaces: dict[str, set[str]] = {}
        self._tags: dict[str, set[str]] = {}
        self.bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> CachedReply | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self.clock():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry

    async def put(self, entry: CachedReply, ttl_s: float) -> bool:
        if entry.size > self.max_bytes:
            return False
        entry.expires_at = self.clock() + ttl_s
        if entry.key in self._entries:
            self._drop(entry.key)
        self._entries[entry.key] = entry
        self.bytes += entry.size
        self._namespaces.setdefault(entry.namespace, set()).add(entry.key)
        for tag in entry.tags:
            self._tags.setdefault(tag, set()).add(entry.key)
        while self.bytes > self.max_bytes and self._entries:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            self.evictions += 1
        return True

    def _drop(self, key: str) -> bool:
        entry = self._entries.pop(key, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        members = self._namespaces.get(entry.namespace)
        if members is not None:
            members.discard(key)
            if not members:
                del self._namespaces[entry.namespace]
        for tag in entry.tags:
            tagged = self._tags.get(tag)
            if tagged is not None:
                tagged.discard(key)
                if not tagged:
                    del self._tags[tag]
        return True

    async def invalidate(self, *, key: str | None = None, namespace: str | None = None, tag: str | None = None) -> int:
        keys: set[str] = set()
        if key:
            keys.add(key)
        if namespace:
            keys |= self._namespaces.get(namespace, set())
        if tag:
            keys |= self._tags.get(tag, set())
        return sum(1 for k in list(keys) if self._drop(k))

    def stats(self) -> dict[str, Any]:
        return {"backend": "memory", "entries": len(self._entries), "bytes": self.bytes,
                "max_bytes": self.max_bytes, "evictions": self.evictions}  # fmt: skip

    async def aclose(self) -> None:
        return None


# KEYS: entry, lru zset, sizes hash, bytes counter, then the namespace and tag sets.
# ARGV: payload, ttl ms, now ms, max bytes.
_PUT = """
local old = redis.call('HGET', KEYS[3], KEYS[1])
if old then redis.call('DECRBY', KEYS[4], old) end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local size = string.len(ARGV[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
local total = redis.call('INCRBY', KEYS[4], size)
redis.call('ZADD', KEYS[2], ARGV[3], KEYS[1])
for i = 5, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
local evicted = 0
while total > tonumber(ARGV[4]) do
  local oldest = redis.call('ZPOPMIN', KEYS[2])
  if #oldest == 0 then break end
  local s = redis.call('HGET', KEYS[3], oldest[1])
  redis.call('HDEL', KEYS[3], oldest[1])
  redis.call('DEL', oldest[1])
  if s then total = redis.call('DECRBY', KEYS[4], s) end
  evicted = evicted + 1
end
return evicted
"""

# KEYS: lru zset, sizes hash, bytes counter, then the entries to drop. Returns how many existed.
_DELETE = """
local n = 0
for i = 4, #KEYS do
  local s = redis.call('HGET', KEYS[2], KEYS[i])
  if s then
    redis.call('HDEL', KEYS[2], KEYS[i])
    redis.call('DECRBY', KEYS[3], s)
  end
  redis.call('ZREM', KEYS[1], KEYS[i])
  n = n + redis.call('DEL', KEYS[i])
end
return n
"""


class RedisResponseCache:
    """Entries shared by every gateway replica, through redis-py's asyncio client."""

    def __init__(self, url: str, *, max_bytes: int, prefix: str = "clawback:ec:", timeout_s: float = 0.05) -> None:
        self.max_bytes = max_bytes
        self.prefix = prefix
        self.redis = connect(url, timeout_s)
        self._put = self.redis.register_script(_PUT)
        self._delete = self.redis.register_script(_DELETE)
        self.circuit = RedisCircuit("exact cache")
        self.evictions = 0

    def _k(self, kind: str, name: str) -> str:
        return f"{self.prefix}{kind}:{name}"

    @property
    def _meta(self) -> list[str]:
        return [self._k("meta", "lru"), self._k("meta", "sizes"), self._k("meta", "bytes")]

    async def get(self, key: str) -> CachedReply | None:
        if not self.circuit.available:
            return None
        try:
            payload = await self.redis.get(self._k("e", key))
        except Exception as exc:  # down, timed out, refused: a miss (CancelledError is not an Exception)
            self.circuit.failed(exc)
            return None
        if not payload:
            return None
        try:
            return CachedReply.loads(payload if isinstance(payload, bytes) else payload.encode())
        except (ValueError, KeyError, TypeError):
            return None

    async def put(self, entry: CachedReply, ttl_s: float) -> bool:
        if entry.size > self.max_bytes or not self.circuit.available:
            return False
        entry.expires_at = time.time() + ttl_s
        sets = [self._k("ns", entry.namespace), *(self._k("tag", t) for t in entry.tags)]
        keys = [self._k("e", entry.key), *self._meta, *sets]
        try:
            evicted = await self._put(keys=keys, args=[entry.dumps(), int(ttl_s * 1000), int(time.time() * 1000),
                                                       self.max_bytes])  # fmt: skip
        except Exception as exc:
            self.circuit.failed(exc)
            return False
        self.evictions += int(evicted or 0)
        return True

    async def _drop(self, entry_keys: Iterable[str]) -> int:
        keys = list(entry_keys)
        if not keys:
            return 0
        return int(await self._delete(keys=[*self._meta, *keys]))

    async def invalidate(self, *, key: str | None = None, namespace: str | None = None, tag: str | None = None) -> int:
        entry_keys: set[str] = set()
        if key:
            entry_keys.add(self._k("e", key))
        for set_key in ([self._k("ns", namespace)] if namespace else []) + ([self._k("tag", tag)] if tag else []):
            members = await self.redis.smembers(set_key)
            entry_keys |= {m.decode() if isinstance(m, bytes) else str(m) for m in members}
            await self.redis.delete(set_key)
        return await self._drop(entry_keys)

    def stats(self) -> dict[str, Any]:
        return {"backend": "redis", "errors": self.circuit.errors, "evictions": self.evictions,
                "available": self.circuit.available, "max_bytes": self.max_bytes}  # fmt: skip

    async def bytes_used(self) -> int:
        value = await self.redis.get(self._k("meta", "bytes"))
        return int(value or 0)

    async def clear(self) -> None:
        """Drop every key under the prefix (tests, ``clawback cache invalidate --all --direct``)."""
        async for name in self.redis.scan_iter(match=f"{self.prefix}*", count=500):
            await self.redis.delete(name)

    async def aclose(self) -> None:
        await self.redis.aclose()
