"""Budget counters: spent and reserved amounts per budget window, changed atomically.

One protocol, two stores. ``EmbeddedCounters`` keeps them in the process (one gateway, or the in-process
wrapper); ``RedisCounters`` keeps them in Redis for replicas that share budgets, where each operation is one
Lua script, so a check and its increment can never interleave with another replica's (the check-then-increment
race peers' trackers have). Both implement the same rules:

* ``reserve`` checks every item (one per applicable budget) and either reserves all of them or none. An item
  is *exceeded* when the settled spend plus the amount is over its limit (no waiting can help), *blocked* when
  only the other requests' reservations are in the way (they may settle for less), else it fits.
* A reservation is a lease: it expires ``lease_s`` after it was made or last renewed, and an expired one is
  dropped by the next operation that reads its counter, so a gateway that died strands nothing for long.
  Lease times come from one clock (Redis ``TIME``, or this process's), never from each replica's own.
* ``settle`` drops the reservation and adds what the call really cost to the window's current bucket; it runs
  once per reservation id (a second settle is ignored), also when the lease had already expired.
* A window is a list of bucket names (one for a calendar window, the sub-windows of a rolling one); spend is
  added to the last (current) bucket, which expires after ``ttl_s``.

Amounts are integer micro-dollars and tokens. A limit of None is no limit on that measure.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from clawback.storage.redis_link import RedisCircuit, connect

__all__ = [
    "CounterItem",
    "CounterStore",
    "CounterStoreUnavailable",
    "CounterUsage",
    "EmbeddedCounters",
    "RedisCounters",
    "ReserveOutcome",
]

#: How long a settled reservation id is remembered, so that a repeated settle cannot count twice.
SETTLED_MEMORY_S = 86400


class CounterStoreUnavailable(Exception):
    """The counters cannot be read or changed right now (Redis down, slow, or the circuit is open)."""


@dataclass(frozen=True, slots=True)
class CounterItem:
    """One budget's share of an operation: which counter, over which buckets, how much, against which limit."""

    cid: str
    buckets: tuple[str, ...]
    ttl_s: int
    micro_usd: int = 0
    tokens: int = 0
    limit_micro_usd: int | None = None
    limit_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class CounterUsage:
    spent_micro_usd: int = 0
    spent_tokens: int = 0
    reserved_micro_usd: int = 0
    reserved_tokens: int = 0
    reservations: int = 0


@dataclass(frozen=True, slots=True)
class ReserveOutcome:
    status: Literal["ok", "blocked", "exceeded"]
    index: int = -1
    """The item that did not fit (the first exceeded one, else the first blocked one)."""
    usage: CounterUsage = field(default_factory=CounterUsage)
    """That item's counter at the moment of the decision."""


class CounterStore(Protocol):
    async def reserve(self, rid: str, items: Sequence[CounterItem], lease_s: float) -> ReserveOutcome: ...

    async def settle(self, rid: str, items: Sequence[CounterItem]) -> list[CounterUsage]:
        """Settle (amounts = the real cost; zero to release); returns each item's counter afterwards."""
        ...

    async def renew(self, leases: Sequence[tuple[str, str]], lease_s: float) -> None:
        """Extend the leases of (cid, rid) pairs that still exist."""
        ...

    async def usage(self, cid: str, buckets: Sequence[str]) -> CounterUsage: ...

    async def claim(self, marker: str, ttl_s: int) -> bool:
        """True the first time ``marker`` is claimed within ``ttl_s`` (an alert fires once)."""
        ...

    async def aclose(self) -> None: ...


def _limit(value: int | None) -> int:
    return -1 if value is None else value


def _verdict(item: CounterItem, spent: tuple[int, int], reserved: tuple[int, int]) -> int:
    """0 fits, 1 blocked (by reservations only), 2 exceeded; same rule as the Lua script."""
    worst = 0
    for limit, s, r, amount in (
        (_limit(item.limit_micro_usd), spent[0], reserved[0], item.micro_usd),
        (_limit(item.limit_tokens), spent[1], reserved[1], item.tokens),
    ):
        if limit < 0:
            continue
        if s + amount > limit:
            worst = 2
        elif s + r + amount > limit:
            worst = max(worst, 1)
    return worst


class EmbeddedCounters:
    """Counters in this process. Thread-safe (the sync wrapper's loop thread and others may share it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spent: dict[tuple[str, str], list[float]] = {}  # (cid, bucket) -> [micro, tokens, expires_at]
        self._leases: dict[str, dict[str, tuple[int, int, float]]] = {}  # cid -> rid -> (micro, tokens, expiry)
        self._settled: dict[str, float] = {}
        self._claims: dict[str, float] = {}

    def _purge(self, cid: str, now: float) -> dict[str, tuple[int, int, float]]:
        leases = self._leases.setdefault(cid, {})
        for rid in [rid for rid, (_, _, expiry) in leases.items() if expiry <= now]:
            del leases[rid]
        return leases

    def _spent_of(self, cid: str, buckets: Sequence[str], now: float) -> tuple[int, int]:
        micro = tokens = 0
        for bucket in buckets:
            entry = self._spent.get((cid, bucket))
            if entry is not None and entry[2] > now:
                micro += int(entry[0])
                tokens += int(entry[1])
        return micro, tokens

    def _usage(self, cid: str, buckets: Sequence[str], now: float) -> CounterUsage:
        leases = self._purge(cid, now)
        spent = self._spent_of(cid, buckets, now)
        return CounterUsage(spent[0], spent[1], sum(m for m, _, _ in leases.values()),
                            sum(t for _, t, _ in leases.values()), len(leases))  # fmt: skip

    async def reserve(self, rid: str, items: Sequence[CounterItem], lease_s: float) -> ReserveOutcome:
        now = time.time()
        with self._lock:
            if items and rid in self._leases.get(items[0].cid, {}):
                return ReserveOutcome("ok")  # already reserved (idempotent, as the Redis script)
            worst, index, at = 0, -1, CounterUsage()
            for i, item in enumerate(items):
                usage = self._usage(item.cid, item.buckets, now)
                verdict = _verdict(item, (usage.spent_micro_usd, usage.spent_tokens),
                                   (usage.reserved_micro_usd, usage.reserved_tokens))  # fmt: skip
                if verdict > worst:
                    worst, index, at = verdict, i, usage
            if worst:
                return ReserveOutcome("exceeded" if worst == 2 else "blocked", index, at)
            for item in items:
                self._leases[item.cid][rid] = (item.micro_usd, item.tokens, now + lease_s)
        return ReserveOutcome("ok")

    async def settle(self, rid: str, items: Sequence[CounterItem]) -> list[CounterUsage]:
        now = time.time()
        with self._lock:
            first = rid not in self._settled
            self._settled[rid] = now + SETTLED_MEMORY_S
            out = []
            for item in items:
                self._leases.setdefault(item.cid, {}).pop(rid, None)
                if first and (item.micro_usd or item.tokens):
                    entry = self._spent.setdefault((item.cid, item.buckets[-1]), [0, 0, 0.0])
                    entry[0] += item.micro_usd
                    entry[1] += item.tokens
                    entry[2] = now + item.ttl_s
                out.append(self._usage(item.cid, item.buckets, now))
            if len(self._settled) > 100_000:
                self._settled = {k: v for k, v in self._settled.items() if v > now}
        return out

    async def renew(self, leases: Sequence[tuple[str, str]], lease_s: float) -> None:
        now = time.time()
        with self._lock:
            for cid, rid in leases:
                held = self._leases.get(cid, {}).get(rid)
                if held is not None and held[2] > now:
                    self._leases[cid][rid] = (held[0], held[1], now + lease_s)

    async def usage(self, cid: str, buckets: Sequence[str]) -> CounterUsage:
        with self._lock:
            return self._usage(cid, buckets, time.time())

    async def claim(self, marker: str, ttl_s: int) -> bool:
        now = time.time()
        with self._lock:
            if self._claims.get(marker, 0.0) > now:
                return False
            self._claims[marker] = now + ttl_s
            return True

    async def aclose(self) -> None:
        return None


# ------------------------------------------------------------------------------------------------ Redis

# Keys: {p}s:{cid}:{bucket} hash m,t (spend); {p}r:{cid} zset rid -> lease expiry (ms, Redis TIME);
# {p}rm:{cid} / {p}rt:{cid} hashes rid -> reserved micro / tokens; {p}rs:{cid} hash m,t (reserved totals);
# {p}done:{rid} (settled once); {p}a:{marker} (alert claimed). Keys are built inside the scripts from the
# prefix: fine on one Redis (or a primary with replicas), not on Redis Cluster.
_COMMON = """
local p = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
-- Numbers leave Lua as integers in decimal: tostring() would give "1e+15" for large ones and "-0" for -0.
local function int(v) return string.format('%d', v) end
local function add(key, field, v) if v ~= 0 then redis.call('HINCRBY', key, field, int(v)) end end
local function purge(cid)
  local z = p .. 'r:' .. cid
  local old = redis.call('ZRANGEBYSCORE', z, '-inf', now)
  for _, id in ipairs(old) do
    local m = tonumber(redis.call('HGET', p .. 'rm:' .. cid, id) or '0')
    local tk = tonumber(redis.call('HGET', p .. 'rt:' .. cid, id) or '0')
    add(p .. 'rs:' .. cid, 'm', -m)
    add(p .. 'rs:' .. cid, 't', -tk)
    redis.call('HDEL', p .. 'rm:' .. cid, id)
    redis.call('HDEL', p .. 'rt:' .. cid, id)
    redis.call('ZREM', z, id)
  end
end
local function usage(cid, buckets)
  purge(cid)
  local sm, st = 0, 0
  for _, b in ipairs(buckets) do
    local v = redis.call('HMGET', p .. 's:' .. cid .. ':' .. b, 'm', 't')
    sm = sm + tonumber(v[1] or '0')
    st = st + tonumber(v[2] or '0')
  end
  local r = redis.call('HMGET', p .. 'rs:' .. cid, 'm', 't')
  return sm, st, tonumber(r[1] or '0'), tonumber(r[2] or '0'), redis.call('ZCARD', p .. 'r:' .. cid)
end
"""

_RESERVE = (
    _COMMON
    + """
local rid = ARGV[2]
local lease = tonumber(ARGV[3])
local items = cjson.decode(ARGV[4])
-- Idempotent: a reserve retried after a client-side timeout must not reserve twice.
if #items > 0 and redis.call('ZSCORE', p .. 'r:' .. items[1].c, rid) then return {0} end
local worst, index, at = 0, -1, {0, 0, 0, 0, 0}
for i, it in ipairs(items) do
  local sm, st, rm, rt, n = usage(it.c, it.b)
  local v = 0
  for _, pair in ipairs({{it.lm, sm, rm, it.m}, {it.lt, st, rt, it.t}}) do
    local limit, s, r, a = pair[1], pair[2], pair[3], pair[4]
    if limit >= 0 then
      if s + a > limit then v = 2 elseif s + r + a > limit and v < 1 then v = 1 end
    end
  end
  if v > worst then worst, index, at = v, i - 1, {sm, st, rm, rt, n} end
end
if worst > 0 then return {worst, index, at[1], at[2], at[3], at[4], at[5]} end
for _, it in ipairs(items) do
  redis.call('ZADD', p .. 'r:' .. it.c, int(now + lease), rid)
  redis.call('HSET', p .. 'rm:' .. it.c, rid, int(it.m))
  redis.call('HSET', p .. 'rt:' .. it.c, rid, int(it.t))
  add(p .. 'rs:' .. it.c, 'm', it.m)
  add(p .. 'rs:' .. it.c, 't', it.t)
end
return {0}
"""
)

_SETTLE = (
    _COMMON
    + """
local rid = ARGV[2]
local items = cjson.decode(ARGV[3])
local first = redis.call('SET', p .. 'done:' .. rid, '1', 'NX', 'EX', tonumber(ARGV[4]))
local out = {}
for _, it in ipairs(items) do
  if redis.call('ZREM', p .. 'r:' .. it.c, rid) == 1 then
    local m = tonumber(redis.call('HGET', p .. 'rm:' .. it.c, rid) or '0')
    local tk = tonumber(redis.call('HGET', p .. 'rt:' .. it.c, rid) or '0')
    add(p .. 'rs:' .. it.c, 'm', -m)
    add(p .. 'rs:' .. it.c, 't', -tk)
    redis.call('HDEL', p .. 'rm:' .. it.c, rid)
    redis.call('HDEL', p .. 'rt:' .. it.c, rid)
  end
  if first and (it.m > 0 or it.t > 0) then
    local key = p .. 's:' .. it.c .. ':' .. it.b[#it.b]
    add(key, 'm', it.m)
    add(key, 't', it.t)
    redis.call('EXPIRE', key, int(it.ttl))
  end
  local sm, st, rm, rt, n = usage(it.c, it.b)
  for _, v in ipairs({sm, st, rm, rt, n}) do table.insert(out, v) end
end
return out
"""
)

_RENEW = (
    _COMMON
    + """
local lease = tonumber(ARGV[2])
local pairs_ = cjson.decode(ARGV[3])
for _, pr in ipairs(pairs_) do
  redis.call('ZADD', p .. 'r:' .. pr[1], 'XX', int(now + lease), pr[2])
end
return 0
"""
)

_USAGE = (
    _COMMON
    + """
local sm, st, rm, rt, n = usage(ARGV[2], cjson.decode(ARGV[3]))
return {sm, st, rm, rt, n}
"""
)


def _item_json(item: CounterItem) -> dict[str, Any]:
    return {"c": item.cid, "b": list(item.buckets), "m": item.micro_usd, "t": item.tokens, "ttl": item.ttl_s,
            "lm": _limit(item.limit_micro_usd), "lt": _limit(item.limit_tokens)}  # fmt: skip


def _usage_of(values: Sequence[Any]) -> CounterUsage:
    return CounterUsage(*(int(v) for v in values[:5]))


class RedisCounters:
    """Counters in Redis, each operation one Lua script (atomic on the server)."""

    def __init__(self, url: str, prefix: str, timeout_s: float) -> None:
        self.prefix = prefix
        self.redis = connect(url, timeout_s)
        # Open for half a second only: with fail-closed budgets, every request in that time is refused.
        self.circuit = RedisCircuit("budget counters", open_s=0.5)
        self._scripts = {name: self.redis.register_script(body)
                         for name, body in (("reserve", _RESERVE), ("settle", _SETTLE), ("renew", _RENEW),
                                            ("usage", _USAGE))}  # fmt: skip

    async def _run(self, name: str, *args: Any) -> Any:
        """Run a script; a timeout is retried once (every script is idempotent: a reserve or settle seen twice
        counts once), since on a busy machine one slow answer should not refuse a second of traffic."""
        if not self.circuit.available:
            raise CounterStoreUnavailable("budget counters: Redis unavailable (circuit open)")
        for attempt in (1, 2):
            try:
                return await self._scripts[name](keys=[], args=[self.prefix, *args])
            except Exception as exc:  # redis-py raises several families (connection, timeout, response)
                if attempt == 1 and type(exc).__name__ == "TimeoutError":
                    continue
                self.circuit.failed(exc)
                raise CounterStoreUnavailable(f"budget counters: Redis failed: {exc}") from exc
        raise AssertionError("unreachable")

    async def reserve(self, rid: str, items: Sequence[CounterItem], lease_s: float) -> ReserveOutcome:
        payload = json.dumps([_item_json(item) for item in items])
        result = await self._run("reserve", rid, int(lease_s * 1000), payload)
        if int(result[0]) == 0:
            return ReserveOutcome("ok")
        status: Literal["blocked", "exceeded"] = "exceeded" if int(result[0]) == 2 else "blocked"
        return ReserveOutcome(status, int(result[1]), _usage_of(result[2:]))

    async def settle(self, rid: str, items: Sequence[CounterItem]) -> list[CounterUsage]:
        payload = json.dumps([_item_json(item) for item in items])
        result = await self._run("settle", rid, payload, SETTLED_MEMORY_S)
        return [_usage_of(result[i : i + 5]) for i in range(0, len(result), 5)]

    async def renew(self, leases: Sequence[tuple[str, str]], lease_s: float) -> None:
        if leases:
            await self._run("renew", int(lease_s * 1000), json.dumps([list(pair) for pair in leases]))

    async def usage(self, cid: str, buckets: Sequence[str]) -> CounterUsage:
        return _usage_of(await self._run("usage", cid, json.dumps(list(buckets))))

    async def claim(self, marker: str, ttl_s: int) -> bool:
        if not self.circuit.available:
            raise CounterStoreUnavailable("budget counters: Redis unavailable (circuit open)")
        try:
            return bool(await self.redis.set(self.prefix + "a:" + marker, "1", nx=True, ex=max(ttl_s, 1)))
        except Exception as exc:
            self.circuit.failed(exc)
            raise CounterStoreUnavailable(f"budget counters: Redis failed: {exc}") from exc

    async def aclose(self) -> None:
        await self.redis.aclose()
