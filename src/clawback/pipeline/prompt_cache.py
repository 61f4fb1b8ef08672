"""The prompt-cache planner stage: ``cache_control`` breakpoints where they pay, and cache-aware fan-out.

It only ever adds ``{"type": "ephemeral"[, "ttl": "1h"]}`` markers (a client's own breakpoints, TTLs and
``scope`` stay as sent; nothing else in the body changes unless ``prompt_cache.stabilize_tools``), within the
API's rules (at most 4 breakpoints, the model's minimum cacheable length, 1-hour entries before 5-minute ones);
``role: "system"`` messages are part of the prefix in message order; it keeps a breakpoint on pruning's
``ctx.cache_frontier``; N concurrent requests with the same new static prefix
wait for the first one's first byte instead of all paying the write. It books ``cost(no caching) -
cost(actual)`` from the upstream's usage with the pricing module: negative when a write never paid back.

Why a stage and not the client's job: where a breakpoint pays (the tail, a bridge beyond the 20-block lookback,
the frontier) and which TTL pays depend on traffic only the gateway sees across requests. The rules it plans by,
its candidates, TTL choice, payback back-off and churn reports: ``docs/prompt-cache.md``.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from clawback.api.messages import MAX_CACHE_BREAKPOINTS, count_cache_breakpoints, strip_cache_control
from clawback.api.prompt_cache import (
    LOOKBACK_POSITIONS,
    TTL_SECONDS,
    cacheable,
    long_enough,
    lookback_positions,
    markable,
    new_position,
    prefix_digests,
    ttl_of,
)
from clawback.api.usage import Usage
from clawback.config import PromptCacheSettings
from clawback.pipeline.context import Mode, Reply, RequestContext
from clawback.pipeline.stage import CallNext, Chain
from clawback.pricing import ModelPrice, PriceBook
from clawback.tokens import (
    PromptBlock,
    message_prompt_blocks,
    message_tokens_at_most,
    prompt_blocks,
    static_prompt_blocks,
)

__all__ = ["ChurnReport", "Plan", "PromptCachePlanner", "choose_ttl", "plan_request"]

log = logging.getLogger("clawback.prompt_cache")

_VOLATILE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # uuid
    r"|\b(?:req|msg|run|trace|span|id)_[A-Za-z0-9]+"  # prefixed ids
    r"|\b[0-9a-f]{16,}\b"  # hex ids
    r"|\d+"  # numbers, dates, times
)
_KINDS = ("tail", "frontier", "bridge", "system", "tools")
PromptKey = tuple[str, str, bytes]  # scope, model, prefix digest


# ------------------------------------------------------------------------------------------------ planning


@dataclass(frozen=True, slots=True)
class Breakpoint:
    index: int  # block index in prompt order
    ttl: str
    kind: str  # "client" or one of _KINDS


@dataclass(slots=True)
class Plan:
    """What the planner decided for one request, and what it needs to judge the reply."""

    body: dict[str, Any]
    blocks: list[PromptBlock]
    cumulative: list[int]
    digests: list[bytes]
    breakpoints: list[Breakpoint]  # client's and ours, in prompt order
    added: list[Breakpoint]
    static_index: int | None  # last block of tools + system
    client_coverage: int  # tokens up to the client's last breakpoint (0: none)
    skipped: dict[str, str] = field(default_factory=dict)  # kind -> why not placed


def _ttl_of(control: Any) -> str:
    # Unlike the simulator, never refuse: a TTL the API does not know is the API's to reject; plan it as the default.
    return ttl_of(control) or "5m"


def choose_ttl(intervals: Sequence[float], price: ModelPrice) -> str:
    """5m or 1h for a prefix reused after ``intervals`` seconds, by the model's own write and read prices.

    Per token: with a 5m TTL every interval over 5 minutes is a rewrite at the 5m write price, the rest reads;
    with 1h the same at one hour and the 1h price. Plus the first write at each TTL's price.
    """
    if not intervals:
        return "5m"
    read, w5, w1h = price.cache_read, price.cache_write_5m, price.cache_write_1h
    cost_5m = w5 + sum((read if g <= TTL_SECONDS["5m"] else w5) for g in intervals)
    cost_1h = w1h + sum((read if g <= TTL_SECONDS["1h"] else w1h) for g in intervals)
    return "1h" if cost_1h < cost_5m else "5m"


def _with_marker(block: Mapping[str, Any], ttl: str) -> dict[str, Any]:
    control: dict[str, Any] = {"type": "ephemeral"}
    if ttl == "1h":
        control["ttl"] = "1h"
    return {**block, "cache_control": control}


def _apply(body: dict[str, Any], blocks: Sequence[PromptBlock], added: Sequence[Breakpoint]) -> dict[str, Any]:
    """A copy of ``body`` with markers on ``added`` blocks; everything not on the way to them is shared."""
    out = dict(body)
    for point in added:
        path = blocks[point.index].path.split(".")
        section = path[0]
        if section == "tools":
            tools = out["tools"] = list(out["tools"])
            i = int(path[1])
            tools[i] = _with_marker(tools[i], point.ttl)
        elif section == "system":
            system = out["system"]
            if isinstance(system, str):
                out["system"] = [_with_marker({"type": "text", "text": system}, point.ttl)]
            else:
                system = out["system"] = list(system)
                i = int(path[1])
                system[i] = _with_marker(system[i], point.ttl)
        else:
            messages = out["messages"] = list(out["messages"])
            m = int(path[1])
            message = messages[m] = dict(messages[m])
            content = message["content"]
            if isinstance(content, str):
                message["content"] = [_with_marker({"type": "text", "text": content}, point.ttl)]
            else:
                content = message["content"] = list(content)
                j = int(path[3])
                content[j] = _with_marker(content[j], point.ttl)
    return out


def stabilize_tools(body: dict[str, Any]) -> dict[str, Any]:
    """Tools sorted by name with their JSON keys sorted (opt-in: it rewrites the client's request)."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools:
        return body
    canonical = [orjson.loads(orjson.dumps(t, option=orjson.OPT_SORT_KEYS)) for t in tools]
    canonical.sort(key=lambda t: str(t.get("name", "")) if isinstance(t, dict) else "")
    if canonical == tools and orjson.dumps(canonical) == orjson.dumps(tools):
        return body
    return {**body, "tools": canonical}


def plan_request(
    body: dict[str, Any],
    price: ModelPrice,
    *,
    allowed: Callable[[str], bool] = lambda kind: True,
    ttl_for: Callable[[str], str] = lambda kind: "5m",
    known: Callable[[int, bytes], bool] = lambda index, digest: False,
    blocks: list[PromptBlock] | None = None,
    digests: list[bytes] | None = None,
    frontier: int | None = None,
) -> Plan:
    """Decide the breakpoints for ``body`` (pure: the planner's state comes in through the callables).

    ``allowed(kind)``: payback allows this kind; ``ttl_for(kind)``: the TTL its reuse intervals favour;
    ``known(index, digest)``: we believe the prefix ending at block ``index`` is cached now.
    ``blocks`` / ``digests``: ``prompt_blocks(body)`` and ``prefix_digests`` when the caller has them already.
    ``frontier``: a message whose prefix stays byte-identical until pruning's next compaction point
    (``RequestContext.cache_frontier``); a breakpoint on its last block keeps that prefix cached, so the
    compaction rewrites only what follows it.
    """
    if blocks is None:
        blocks, _ = prompt_blocks(body)
    cumulative: list[int] = []
    running = 0
    for pb in blocks:
        running += pb.tokens
        cumulative.append(running)
    if digests is None:
        digests = prefix_digests(body, blocks)
    client: list[Breakpoint] = [
        Breakpoint(i, _ttl_of(pb.block["cache_control"]), "client") for i, pb in enumerate(blocks)
        if pb.block.get("cache_control") and cacheable(pb.block)
    ]  # fmt: skip
    top = body.get("cache_control")
    if top:
        target = next((i for i in range(len(blocks) - 1, -1, -1) if cacheable(blocks[i].block)), None)
        if target is not None and all(p.index != target for p in client):
            client.append(Breakpoint(target, _ttl_of(top), "client"))
    client.sort(key=lambda p: p.index)
    static = [i for i, pb in enumerate(blocks) if pb.section != "messages"]
    static_index = static[-1] if static else None
    plan = Plan(body, blocks, cumulative, digests, list(client), [], static_index,
                cumulative[client[-1].index] if client else 0)  # fmt: skip
    slots = MAX_CACHE_BREAKPOINTS - count_cache_breakpoints(body)
    if slots <= 0 or not blocks:
        plan.skipped["all"] = "no free breakpoint slot"
        return plan
    taken = {p.index for p in client}
    candidates: list[tuple[str, int]] = []
    tail = next((i for i in range(len(blocks) - 1, -1, -1)
                 if blocks[i].section == "messages" and markable(blocks[i].block)), None)  # fmt: skip
    if tail is not None:
        candidates.append(("tail", tail))
        first_message = static_index + 1 if static_index is not None else 0
        bridge = next((i for i in range(tail - 1, first_message - 1, -1)
                       if known(i, digests[i]) and markable(blocks[i].block)), None)  # fmt: skip
        if frontier is not None:
            where = f"messages.{frontier}."
            spot = next((i for i in range(tail, first_message - 1, -1)
                         if blocks[i].path.startswith(where) and markable(blocks[i].block)), None)  # fmt: skip
            if spot is not None and spot != tail:
                candidates.append(("frontier", spot))
        if bridge is not None and lookback_positions(blocks, bridge, tail) > LOOKBACK_POSITIONS:
            candidates.append(("bridge", bridge))
    systems = [i for i, pb in enumerate(blocks) if pb.section == "system"]
    if systems:
        candidates.append(("system", systems[-1]))
    tools = [i for i, pb in enumerate(blocks) if pb.section == "tools"]
    if tools:
        candidates.append(("tools", tools[-1]))
    chosen: list[tuple[str, int]] = []
    for kind, index in candidates:
        if len(chosen) >= slots:
            plan.skipped[kind] = "no free breakpoint slot"
        elif index in taken:
            plan.skipped[kind] = "the client has a breakpoint there"
        elif not long_enough(cumulative[index], price.min_cacheable_tokens):
            plan.skipped[kind] = f"prefix below the model's minimum ({price.min_cacheable_tokens} tokens)"
        elif kind not in ("bridge", "frontier") and not allowed(kind):
            plan.skipped[kind] = "backed off: writes have not paid back"
        else:
            chosen.append((kind, index))
            taken.add(index)
    if not chosen:
        return plan
    # TTLs: favoured per kind, then the API's rule (1h entries before 5m ones) against the client's markers.
    ours = sorted(chosen, key=lambda c: c[1])
    added: list[Breakpoint] = []
    for kind, index in ours:
        ttl = ttl_for(kind)
        if any(p.ttl == "1h" and p.index > index for p in client):
            ttl = "1h"
        elif any(p.ttl == "5m" and p.index < index for p in client) or any(a.ttl == "5m" for a in added):
            ttl = "5m"
        added.append(Breakpoint(index, ttl, kind))
    # A 1h of ours after a 5m of ours is impossible by construction; re-check the whole order once.
    merged = sorted([*client, *added], key=lambda p: p.index)
    seen_5m = False
    for point in merged:
        if point.ttl == "5m":
            seen_5m = True
        elif seen_5m and point.kind != "client":
            added = [Breakpoint(a.index, "5m", a.kind) if a.index == point.index else a for a in added]
    plan.added = added
    plan.breakpoints = sorted([*client, *added], key=lambda p: p.index)
    plan.body = _apply(body, blocks, added)
    return plan


# ------------------------------------------------------------------------------------------------ state


@dataclass(slots=True)
class PaybackStats:
    """Per (family, kind): what writes cost over input, what reads saved under input (micro-USD)."""

    writes: int = 0
    reads: int = 0
    # Tokens x USD per million tokens = micro-dollars, kept exact (money is never a float).
    write_premium: Decimal = Decimal(0)
    read_savings: Decimal = Decimal(0)
    skipped: int = 0
    intervals: deque[float] = field(default_factory=lambda: deque(maxlen=32))
    last_used: float | None = None

    @property
    def paid_back(self) -> bool:
        return self.read_savings >= self.write_premium

    def as_dict(self) -> dict[str, Any]:
        return {
            "writes": self.writes,
            "reads": self.reads,
            "write_premium_micro_usd": int(self.write_premium.to_integral_value()),
            "read_savings_micro_usd": int(self.read_savings.to_integral_value()),
            "paid_back": self.paid_back,
        }


@dataclass(slots=True)
class _Entry:
    family: str
    kind: str
    ttl: str
    last_used: float
    expires_at: float


@dataclass(frozen=True, slots=True)
class ChurnReport:
    """A request whose cacheable prefix changed against the previous request of the same family."""

    request_id: str
    at: float
    scope: str
    model: str
    family: str
    changes: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "at": self.at, "scope": self.scope, "model": self.model,
                "family": self.family, "changes": list(self.changes)}  # fmt: skip


@dataclass(slots=True)
class _Snapshot:
    static_digest: bytes | None
    tools: list[bytes]
    tool_names: list[str]
    system: list[str]


@functools.lru_cache(maxsize=4096)
def _mask(text: str) -> str:
    """``text`` with volatile tokens masked. Memoized: the same system prompt comes back on every request, and
    running the volatile-token regex over it each time was a third of the gateway's CPU under load."""
    return _VOLATILE.sub("#", text)


def _describe_volatile(before: str, after: str) -> str:
    """The first differing stretch, a few characters either side."""
    i = 0
    while i < min(len(before), len(after)) and before[i] == after[i]:
        i += 1
    j = 0
    while j < min(len(before), len(after)) - i and before[-1 - j] == after[-1 - j]:
        j += 1
    start = max(0, i - 12)
    return f"{before[start : len(before) - j][:60]!r} -> {after[start : len(after) - j][:60]!r}"


def _snapshot(blocks: Sequence[PromptBlock], static_digest: bytes | None) -> _Snapshot:
    tools = [pb.block for pb in blocks if pb.section == "tools"]
    system = [pb.block for pb in blocks if pb.section == "system"]
    return _Snapshot(
        static_digest,
        [orjson.dumps(strip_cache_control(t)) for t in tools],
        [str(t.get("name", "")) for t in tools],
        [
            str(b.get("text", "")) if b.get("type") == "text" else orjson.dumps(strip_cache_control(b)).decode()
            for b in system
        ],
    )


@dataclass(slots=True)
class _StaticPrefix:
    """What the planner's fast path reads of a request's tools and system (``PromptCachePlanner._static_prefix``)."""

    blocks: list[PromptBlock]  # of the first request seen with this prefix (equal content, other dicts)
    tokens: int
    marked: bool  # a block carries a client's cache_control
    digest: bytes | None  # the static prefix's ``prefix_digests`` entry; None without tools or system


def _family_of(scope: str, model: str, snap: _Snapshot) -> str:
    """Same tools by name (any order) and same system once volatile tokens are masked: one family."""
    hasher = hashlib.blake2b(digest_size=8)
    hasher.update(f"{scope}\x00{model}\x00".encode())
    hasher.update(orjson.dumps(sorted(snap.tool_names)))
    for text in snap.system:
        hasher.update(_mask(text).encode())
        hasher.update(b"\x00")
    return hasher.hexdigest()


def diff_prefix(before: _Snapshot, after: _Snapshot) -> list[str]:
    """What changed in tools and system between two requests of one family, most specific cause first."""
    changes: list[str] = []
    if before.tools != after.tools:
        if before.tool_names != after.tool_names and sorted(before.tool_names) == sorted(after.tool_names):
            changes.append(f"tools reordered: {before.tool_names} -> {after.tool_names}")
        else:
            old = dict(zip(before.tool_names, before.tools, strict=False))
            for i, (name, raw) in enumerate(zip(after.tool_names, after.tools, strict=False)):
                prior = old.get(name)
                if prior is None or prior == raw:
                    continue
                same = orjson.dumps(orjson.loads(prior), option=orjson.OPT_SORT_KEYS) == orjson.dumps(
                    orjson.loads(raw), option=orjson.OPT_SORT_KEYS
                )
                if same:
                    changes.append(f"tools.{i} ({name}): JSON key order changed")
                elif _mask(prior.decode()) == _mask(raw.decode()):
                    changes.append(
                        f"tools.{i} ({name}): volatile content {_describe_volatile(prior.decode(), raw.decode())}"
                    )
                else:
                    changes.append(f"tools.{i} ({name}): definition changed")
    for i, (old_text, new_text) in enumerate(zip(before.system, after.system, strict=False)):
        if old_text != new_text:
            what = "volatile content (timestamp, id, counter)" if _mask(old_text) == _mask(new_text) else "changed"
            changes.append(f"system.{i}: {what} {_describe_volatile(old_text, new_text)}")
    if len(before.system) != len(after.system):
        changes.append(f"system: {len(before.system)} -> {len(after.system)} blocks")
    return changes


# ------------------------------------------------------------------------------------------------ the stage


class PromptCachePlanner:
    name = "prompt_cache"
    # flagged (``pipeline/flags.py``); shadow: plan, send the request as it came, book what the plan would save
    modes: tuple[Mode, ...] = ("off", "shadow", "on")

    def __init__(self, settings: PromptCacheSettings, price_book: PriceBook, clock: Callable[[], float] = time.time):
        self.settings = settings
        self.price_book = price_book
        self.clock = clock
        self._entries: OrderedDict[PromptKey, _Entry] = OrderedDict()
        self._stats: dict[tuple[str, str], PaybackStats] = {}
        self._snapshots: OrderedDict[str, _Snapshot] = OrderedDict()
        self._families: OrderedDict[PromptKey, tuple[_Snapshot, str]] = OrderedDict()
        """Static prefix (scope, model, digest) -> its snapshot and family (``_family``)."""
        self._statics: OrderedDict[bytes, _StaticPrefix] = OrderedDict()
        """Hash of what a static prefix's tokens and digest read -> them (``_static_prefix``)."""
        self._pending: dict[PromptKey, asyncio.Event] = {}
        self._shadow_entries: OrderedDict[PromptKey, float] = OrderedDict()
        """Shadow mode: the prefixes the upstream's cache would hold had the planned breakpoints been sent, and
        when each would expire."""
        self.shadowed = 0
        self.churn: deque[ChurnReport] = deque(maxlen=500)
        self.churn_by_family: dict[str, int] = {}
        self.fanout_held = 0
        self.fanout_timeouts = 0
        self.planned = 0
        self.below_minimum = 0  # planned requests too short to cache at all (the planner's fast path)
        self.breakpoints_added = 0

    # -- state lookups
    def stats_for(self, family: str, kind: str) -> PaybackStats:
        key = (family, "tail" if kind == "bridge" else kind)
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats[key] = PaybackStats()
            if len(self._stats) > self.settings.max_tracked_prefixes:
                self._stats.pop(next(iter(self._stats)))
        return stats

    def _allowed(self, family: str, kind: str) -> bool:
        stats = self.stats_for(family, kind)
        if stats.writes < self.settings.min_writes_before_backoff or stats.paid_back:
            return True
        stats.skipped += 1
        return stats.skipped % self.settings.probe_every == 0

    def believes_cached(self, scope: str, model: str, digest: bytes) -> bool:
        """Whether the planner believes the prefix named ``digest`` (``prefix_digests``) is in ``scope``'s cache
        for ``model`` now: its prediction, learnt from the usage of earlier replies."""
        return self._live((scope, model, digest), self.clock())

    def _live(self, key: PromptKey, now: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.expires_at > now

    def _remember(self, key: PromptKey, entry: _Entry) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.settings.max_tracked_prefixes:
            self._entries.popitem(last=False)

    def _family(
        self, scope: str, model: str, blocks: Sequence[PromptBlock], static_digest: bytes | None
    ) -> tuple[_Snapshot, str]:
        """The request's prefix snapshot and family. Memoized by the static prefix's digest: it names tools and
        system exactly (markers aside, as the snapshot sees them), which are all the snapshot and family read, so
        a prefix seen before is not serialized, masked and hashed again on every request."""
        if static_digest is None:
            snap = _snapshot(blocks, None)
            return snap, _family_of(scope, model, snap)
        key = (scope, model, static_digest)
        known = self._families.get(key)
        if known is not None:
            self._families.move_to_end(key)
            return known
        snap = _snapshot(blocks, static_digest)
        known = self._families[key] = (snap, _family_of(scope, model, snap))
        while len(self._families) > self.settings.max_tracked_prefixes:
            self._families.popitem(last=False)
        return known

    def _static_prefix(self, body: Mapping[str, Any]) -> _StaticPrefix | None:
        """The tools and system of ``body``: their blocks' tokens, markers and prefix digest, memoized by a hash of
        the JSON of everything those read (model, tools, tool_choice, system, speed), which every request with the
        same prefix repeats, so the prefix is estimated, serialized block by block and digested once rather than on
        every request. None when that JSON cannot be written (the caller computes without the memo)."""
        try:
            raw = orjson.dumps(
                [body.get("model"), body.get("tools"), body.get("tool_choice"), body.get("system"), body.get("speed")],
                default=str,
            )
        except TypeError:
            return None
        key = hashlib.blake2b(raw, digest_size=16).digest()
        known = self._statics.get(key)
        if known is not None:
            self._statics.move_to_end(key)
            return known
        blocks = static_prompt_blocks(body)
        known = self._statics[key] = _StaticPrefix(
            blocks,
            sum(pb.tokens for pb in blocks),
            any("cache_control" in pb.block for pb in blocks),
            prefix_digests(body, blocks)[-1] if blocks else None,
        )
        while len(self._statics) > self.settings.max_tracked_prefixes:
            self._statics.popitem(last=False)
        return known

    def _too_short(
        self, body: Mapping[str, Any], minimum: int
    ) -> tuple[_StaticPrefix | None, list[PromptBlock] | None]:
        """Whether the whole prompt is below the model's cacheable minimum with no marker of the client's (the fast
        path): (its static prefix, the messages' blocks if they were counted) when it is, (None, the messages'
        blocks if counted) when not. The messages are bounded first without counting (``message_tokens_at_most``),
        counted only when the bound cannot decide; the static prefix comes from its memo (``_static_prefix``),
        asked only when the messages alone are under the minimum (a long conversation goes straight to planning)."""
        if body.get("cache_control"):
            return None, None
        bound = message_tokens_at_most(body)
        messages: list[PromptBlock] | None = None
        if bound is None or long_enough(bound, minimum):
            messages, _ = message_prompt_blocks(body)
            bound = 0
            for pb in messages:  # a plain loop: this runs on every request
                if "cache_control" in pb.block:
                    return None, messages
                bound += pb.tokens
            if long_enough(bound, minimum):
                return None, messages
        static = self._static_prefix(body)
        if static is None or static.marked or long_enough(static.tokens + bound, minimum):
            return None, messages
        return static, messages

    # -- the stage
    def bind(self, chain: Chain) -> None:
        pass

    async def aclose(self) -> None:
        pass  # its state is in memory only

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply:
        mode = ctx.mode(self.name)
        if ctx.endpoint != "messages" or not ctx.model or mode == "off":
            return await call_next(ctx)
        price = self.price_book.get(ctx.model)
        scope, model, now = ctx.tenant.scope, ctx.model, self.clock()
        body = ctx.body
        if self.settings.stabilize_tools:
            body = stabilize_tools(body)
        static, messages = self._too_short(body, price.min_cacheable_tokens) if mode == "on" else (None, None)
        if static is not None:
            # No prefix of it can be cached, and the client marked none: plan_request would place nothing and
            # the reply could teach nothing, so only the churn watch runs (on the static prefix's digest).
            if static.digest is not None:
                snap, family = self._family(scope, model, static.blocks, static.digest)
                self._check_churn(ctx, family, snap)
            self.planned += 1
            self.below_minimum += 1
            if body is not ctx.body:
                ctx.replace_body(body)
            return await call_next(ctx)
        if messages is None:
            messages, _ = message_prompt_blocks(body)
        blocks = static_prompt_blocks(body) + messages  # this body's own blocks: the plan marks them
        static_blocks = [i for i, pb in enumerate(blocks) if pb.section != "messages"]
        # Computed once per request and shared with plan_request (tools/system digests do not depend on the
        # messages, so the full list's entry at the last static block names the static prefix).
        digests = prefix_digests(body, blocks)
        snap_digest = digests[static_blocks[-1]] if static_blocks else None
        snap, family = self._family(scope, model, blocks, snap_digest)
        self._check_churn(ctx, family, snap)

        shadow = mode == "shadow"
        plan = plan_request(
            body,
            price,
            allowed=lambda kind: self._allowed(family, kind),
            ttl_for=lambda kind: choose_ttl(self.stats_for(family, kind).intervals, price),
            known=lambda index, digest: self._shadow_live((scope, model, digest), now) if shadow
            else self._live((scope, model, digest), now),
            blocks=blocks,
            digests=digests,
            frontier=ctx.cache_frontier,
        )  # fmt: skip
        if shadow:
            return await self._shadow(ctx, plan, price, call_next)
        self.planned += 1
        if plan.added or plan.body is not ctx.body:
            self.breakpoints_added += len(plan.added)
            ctx.replace_body(plan.body, markers_only=body is ctx.body)  # tools reordered: not markers only

        release: asyncio.Event | None = None
        static_key: PromptKey | None = None
        if self.settings.fanout and plan.static_index is not None:
            static_key = self._fanout_key(plan, scope, model, price)
        if static_key is not None and not self._live(static_key, now):
            pending = self._pending.get(static_key)
            if pending is not None:
                self.fanout_held += 1
                try:
                    await asyncio.wait_for(pending.wait(), self.settings.fanout_max_wait_s)
                except TimeoutError:
                    self.fanout_timeouts += 1
            else:
                release = self._pending[static_key] = asyncio.Event()

        def first_byte() -> None:
            if release is not None and static_key is not None:
                if self._pending.get(static_key) is release:
                    del self._pending[static_key]
                release.set()

        try:
            reply = await call_next(ctx)
        except BaseException:
            first_byte()
            raise
        if reply.stream is None:
            if reply.status == 200 and static_key is not None and release is not None:
                self._provisional(static_key, family, plan)
            first_byte()
            self._judge(ctx, plan, family, price, reply.usage, reply.status)
        else:
            reply.stream = self._watch(reply, reply.stream, first_byte, static_key, family, plan, release is not None)
            reply.on_close(lambda done: self._judge(ctx, plan, family, price, done.usage, done.status))
        return reply

    # -- shadow mode
    def _shadow_live(self, key: PromptKey, now: float) -> bool:
        expires = self._shadow_entries.get(key)
        return expires is not None and expires > now

    async def _shadow(self, ctx: RequestContext, plan: Plan, price: ModelPrice, call_next: CallNext) -> Reply:
        """Send the request as it came (no breakpoint, no fan-out hold) and book, in ``ctx.shadow_savings``, what
        the planned breakpoints would have saved: the actual bill less the bill predicted for the planned request
        (``predict_usage``)."""
        self.shadowed += 1
        reply = await call_next(ctx)

        def book(done: Reply) -> None:
            if done.status != 200 or not plan.added:
                return
            predicted = self.predict_usage(ctx.tenant.scope, ctx.model, plan, price, done.usage)
            geo, speed = ctx.request.inference_geo, ctx.request.speed
            actual = self.price_book.micro_usd(ctx.model, done.usage, inference_geo=geo, speed=speed)
            planned = self.price_book.micro_usd(ctx.model, predicted, inference_geo=geo, speed=speed)
            ctx.shadow_savings.add(self.name, actual - planned)

        if reply.stream is None:
            book(reply)
        else:
            reply.on_close(book)
        return reply

    def predict_usage(self, scope: str, model: str, plan: Plan, price: ModelPrice, usage: Usage) -> Usage:
        """The usage the planned request would have been billed, by the API's rules (``api/prompt_cache.py``, as
        the simulator bills), from what the shadow cache holds: the longest live prefix the lookback finds from a
        breakpoint is read, the breakpoints beyond it write up to the last one (1-hour entries first), the rest is
        plain input, out of the request's total as the upstream counted it. The shadow cache then holds what the
        planned request would have written. Approximation: the token positions are the planner's estimates."""
        now = self.clock()
        total = usage.total_input_tokens
        cumulative, blocks = plan.cumulative, plan.blocks
        points = [p for p in sorted(plan.breakpoints, key=lambda p: p.index)
                  if long_enough(cumulative[p.index], price.min_cacheable_tokens)]  # fmt: skip

        def key(index: int) -> PromptKey:
            return (scope, model, plan.digests[index])

        hit: int | None = None
        for point in points:
            positions = 1
            for i in range(point.index, -1, -1):
                if i < point.index and new_position(blocks, i):
                    positions += 1
                    if positions > LOOKBACK_POSITIONS:
                        break
                if self._shadow_live(key(i), now):
                    hit = i if hit is None else max(hit, i)
                    break
        read = min(total, cumulative[hit]) if hit is not None else 0
        after = [p for p in points if hit is None or p.index > hit]
        long_ttl = max((cumulative[p.index] for p in after if p.ttl == "1h"), default=read)
        written = max(cumulative[after[-1].index], long_ttl) if after else read
        long_ttl, written = min(total, long_ttl), min(total, written)
        for point in points:
            if hit is None or point.index > hit or self._shadow_live(key(point.index), now):
                self._shadow_entries[key(point.index)] = now + TTL_SECONDS[point.ttl]
                self._shadow_entries.move_to_end(key(point.index))
        if hit is not None:
            self._shadow_entries[key(hit)] = max(self._shadow_entries[key(hit)], now + TTL_SECONDS["5m"])
        while len(self._shadow_entries) > self.settings.max_tracked_prefixes:
            self._shadow_entries.popitem(last=False)
        return Usage(
            input_tokens=max(0, total - written),
            output_tokens=usage.output_tokens,
            cache_read_input_tokens=read,
            cache_write_1h_input_tokens=max(0, long_ttl - read),
            cache_write_5m_input_tokens=max(0, written - long_ttl),
        )

    def _fanout_key(self, plan: Plan, scope: str, model: str, price: ModelPrice) -> PromptKey | None:
        """The static prefix (tools + system) when a breakpoint writes it and it is long enough to cache."""
        index = plan.static_index
        if index is None or not long_enough(plan.cumulative[index], price.min_cacheable_tokens):
            return None
        if not any(p.index == index for p in plan.breakpoints):
            return None
        return (scope, model, plan.digests[index])

    def _provisional(self, key: PromptKey, family: str, plan: Plan) -> None:
        ttl = next((p.ttl for p in plan.breakpoints if p.index == plan.static_index), "5m")
        now = self.clock()
        if not self._live(key, now):
            self._remember(key, _Entry(family, "system", ttl, now, now + TTL_SECONDS[ttl]))

    async def _watch(
        self,
        reply: Reply,
        inner: AsyncIterator[bytes],
        first_byte: Callable[[], None],
        static_key: PromptKey | None,
        family: str,
        plan: Plan,
        leader: bool,
    ) -> AsyncIterator[bytes]:
        """Relay unchanged; on the first chunk (the response has begun) release the held followers."""
        released = False
        try:
            async for chunk in inner:
                if not released:
                    released = True
                    if leader and static_key is not None:
                        self._provisional(static_key, family, plan)
                    first_byte()
                yield chunk
        finally:
            if not released:
                first_byte()
            aclose = getattr(inner, "aclose", None)
            if aclose is not None:
                await aclose()

    # -- churn
    def _check_churn(self, ctx: RequestContext, family: str, snap: _Snapshot) -> None:
        before = self._snapshots.get(family)
        self._snapshots[family] = snap
        self._snapshots.move_to_end(family)
        if len(self._snapshots) > 10_000:
            self._snapshots.popitem(last=False)
        if before is None or before.static_digest == snap.static_digest:
            return
        changes = diff_prefix(before, snap)
        if not changes:
            return
        report = ChurnReport(ctx.request_id, self.clock(), ctx.tenant.scope, ctx.model, family, tuple(changes))
        self.churn.append(report)
        count = self.churn_by_family[family] = self.churn_by_family.get(family, 0) + 1
        if count in (1, 10, 100) or count % 1000 == 0:
            log.warning("prompt cache: request %s changed its cached prefix (%d times in this family): %s",
                        ctx.request_id, count, "; ".join(changes))  # fmt: skip

    # -- judging a reply
    def _judge(
        self, ctx: RequestContext, plan: Plan, family: str, price: ModelPrice, usage: Usage, status: int
    ) -> None:
        """Credit reads and charge writes to their prefix families; record the request's saving."""
        if status != 200:
            return
        now = self.clock()
        scope, model = ctx.tenant.scope, ctx.model
        read = usage.cache_read_input_tokens
        written = usage.cache_creation_input_tokens
        input_price = price.input
        if read:
            hit = max((i for i, c in enumerate(plan.cumulative) if c <= read), default=None)
            if hit is not None:
                key = (scope, model, plan.digests[hit])
                entry = self._entries.get(key)
                kind = entry.kind if entry is not None else self._kind_at(plan, hit)
                stats = self.stats_for(entry.family if entry is not None else family, kind)
                stats.reads += 1
                stats.read_savings += read * (input_price - price.cache_read)
                if entry is not None:
                    stats.intervals.append(now - entry.last_used)
                    entry.last_used = now
                    entry.expires_at = now + TTL_SECONDS[entry.ttl]
                else:
                    self._remember(key, _Entry(family, kind, "5m", now, now + TTL_SECONDS["5m"]))
            # The read also used the entries of the breakpoints inside it: refreshed at no cost, as the API does.
            for point in plan.breakpoints:
                if plan.cumulative[point.index] < read:
                    inside = self._entries.get((scope, model, plan.digests[point.index]))
                    if inside is not None and inside.expires_at > now:
                        inside.expires_at = max(inside.expires_at, now + TTL_SECONDS[inside.ttl])
        if written:
            floor = read
            for point in plan.breakpoints:
                tokens = plan.cumulative[point.index]
                if tokens <= floor or not long_enough(tokens, price.min_cacheable_tokens):
                    continue
                kind = point.kind if point.kind != "client" else self._kind_at(plan, point.index)
                stats = self.stats_for(family, kind)
                write_price = price.cache_write_1h if point.ttl == "1h" else price.cache_write_5m
                stats.writes += 1
                stats.write_premium += (tokens - floor) * (write_price - input_price)
                key = (scope, model, plan.digests[point.index])
                previous = self._entries.get(key)
                if previous is not None and previous.expires_at <= now:
                    stats.intervals.append(now - previous.last_used)  # reused, but too late for its TTL
                self._remember(key, _Entry(family, kind, point.ttl, now, now + TTL_SECONDS[point.ttl]))
                floor = tokens
        if plan.added:
            ctx.savings.add(self.name, self._saving(ctx, plan, usage))

    @staticmethod
    def _kind_at(plan: Plan, index: int) -> str:
        section = plan.blocks[index].section
        return "tail" if section == "messages" else section

    def _saving(self, ctx: RequestContext, plan: Plan, usage: Usage) -> int:
        """cost(without the cache we added) - cost(actual), by the pricing module; negative when writes did not pay."""
        floor = plan.client_coverage
        read = max(0, usage.cache_read_input_tokens - floor)
        start = max(usage.cache_read_input_tokens, floor)
        end = usage.cache_read_input_tokens + usage.cache_creation_input_tokens
        written = max(0, end - start)
        total_written = usage.cache_creation_input_tokens
        share_1h = usage.cache_write_1h_input_tokens / total_written if total_written else 0.0
        w1h = min(usage.cache_write_1h_input_tokens, round(written * share_1h))
        w5 = min(usage.cache_write_5m_input_tokens, written - w1h)
        without = Usage(
            input_tokens=usage.input_tokens + read + w5 + w1h,
            output_tokens=usage.output_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens - read,
            cache_write_5m_input_tokens=usage.cache_write_5m_input_tokens - w5,
            cache_write_1h_input_tokens=usage.cache_write_1h_input_tokens - w1h,
        )
        geo, speed = ctx.request.inference_geo, ctx.request.speed
        actual = self.price_book.micro_usd(ctx.model, usage, inference_geo=geo, speed=speed)
        return self.price_book.micro_usd(ctx.model, without, inference_geo=geo, speed=speed) - actual

    # -- reporting
    def report(self) -> dict[str, Any]:
        families: dict[str, dict[str, Any]] = {}
        for (family, kind), stats in self._stats.items():
            families.setdefault(family, {})[kind] = stats.as_dict()
        return {
            "planned": self.planned,
            "below_minimum": self.below_minimum,
            "shadowed": self.shadowed,
            "breakpoints_added": self.breakpoints_added,
            "fanout_held": self.fanout_held,
            "fanout_timeouts": self.fanout_timeouts,
            "families": families,
            "churn": [r.as_dict() for r in list(self.churn)[-50:]],
        }
