"""The simulator's model of Anthropic prompt caching: what a request reads, writes and pays.

Faithful to https://platform.claude.com/docs/en/build-with-claude/prompt-caching (read 2026-11); each rule
below names the passage it implements. The rules both this module and the planner apply (TTLs, lookback, what
can be cached, minimum length, prefix digests) are ``clawback.api.prompt_cache``; what only the simulator does
is refuse what the API refuses (400s on TTLs, order, empty text, more than 4 breakpoints) and keep the entries.

* Breakpoints. A block with ``cache_control`` (tools, system blocks, message content blocks, in the prefix order
  ``tools`` -> ``system`` -> ``messages``) is a breakpoint. A top-level ``cache_control`` is *automatic caching*:
  "the system automatically applies the cache breakpoint to the last cacheable block"; it "uses one of the 4
  available breakpoint slots"; "if the last block already has an explicit cache_control with the same TTL,
  automatic caching is a no-op", "with a different TTL, the API returns a 400 error", "if 4 explicit block-level
  breakpoints already exist, the API returns a 400 error"; a last block that is not eligible (thinking, empty
  text) makes it walk backwards to the nearest eligible one, "if none is found, caching is skipped". More than 4
  breakpoints is the 400 the request validation raises too (same message).
* TTL. ``"5m"`` (default) or ``"1h"``; "a 1-hour cache entry must appear before any 5-minute cache entries",
  else the 400 the API sends: "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control
  block" (exact text as reported by API users, e.g. https://github.com/cnighswonger/claude-code-cache-fix/issues/44).
  Other ``cache_control`` fields (``scope``...) are accepted and ignored.
* Writes happen only at breakpoints: "Marking a block with cache_control writes exactly one cache entry: a hash
  of the prefix ending at that block". The key hashes every block up to and including the breakpoint without
  its ``cache_control`` marker ("identical content carrying different markers matches"), in the order and key
  order sent (the docs warn that unstable ``tool_use`` key order breaks caches), plus the model and the
  workspace ("Caches are isolated per workspace"). It also hashes what the docs list as invalidating a level:
  ``speed`` for system and messages; ``tool_choice``, thinking settings, ``output_config.effort`` and the
  presence of images for messages.
* Reads look back: "On each request the system computes the prefix hash at your breakpoint and checks for a
  matching cache entry. If none exists, it walks backward one block at a time [...] at most 20 positions per
  breakpoint, counting the breakpoint itself as the first [...] a run of consecutive tool_use blocks counts as
  one position, and so does a run of consecutive tool_result blocks". The longest hit over all breakpoints wins.
* Mid-conversation system messages (``{"role": "system"}`` inside ``messages``): "Prompt caching hashes the request
  prefix in order: tools, then system, then messages [...] Everything before the new instruction is unchanged,
  so the existing cache entry still matches, and only the new message is processed as fresh input"
  (https://platform.claude.com/docs/en/build-with-claude/mid-conversation-system-messages). So their blocks are
  message blocks in message order (the role is hashed with each block, and the message's own fields such as a
  per-message ``output_config`` with its first block), each one lookback position like any text block, a
  ``cache_control`` on one is an ordinary breakpoint, and their tokens are billed as input like the rest.
* Billing with mixed TTLs: "A: the token count at the highest cache hit (or 0 if no hits). B: the token count
  at the highest 1-hour cache_control block after A (or equals A if none exist). C: the token count at the last
  cache_control block. [...] Cache read tokens for A, 1-hour cache write tokens for (B - A), 5-minute cache
  write tokens for (C - B)". ``input_tokens`` is everything after C. Total = read + writes + input =
  ``count_request_tokens(body)`` (the per-block tokens come from ``clawback.tokens.prompt_blocks``).
* Minimum length: "Any requests to cache fewer than this number of tokens will be processed without caching,
  and no error is returned [...] both cache_creation_input_tokens and cache_read_input_tokens are 0". A
  breakpoint whose prefix is below ``min_cacheable_tokens`` neither reads nor writes.
* Lifetime: "measured from the start of the request that writes or reads the cache entry"; "refreshed for no
  additional cost each time the cached content is used". A refreshed entry keeps its own TTL.
* Concurrency: "a cache entry only becomes available after the first response begins": ``account`` records
  the writes, ``activate`` (called when the response starts) makes them readable, so parallel requests that
  arrive before it all pay the write.

The cache lives in one asyncio event loop (no locks). Memory is bounded: expired entries are dropped when met
and swept when the table is full; beyond ``max_entries`` the entries closest to expiry go first.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from clawback.api.errors import InvalidRequestError
from clawback.api.messages import MAX_CACHE_BREAKPOINTS, count_cache_breakpoints
from clawback.api.prompt_cache import (
    LOOKBACK_POSITIONS,
    TTL_SECONDS,
    cacheable,
    long_enough,
    new_position,
    prefix_digests,
    ttl_of,
)
from clawback.api.usage import Usage
from clawback.tokens import PromptBlock, prompt_blocks

__all__ = ["CacheAccount", "PromptCache"]

DEFAULT_MAX_ENTRIES = 100_000

_TTL_ORDER_MESSAGE = (
    "a ttl='1h' cache_control block must not come after a ttl='5m' cache_control block. "
    "Note that blocks are processed in the following order: `tools`, `system`, `messages`."
)

_Key = tuple[str, str, bytes]


@dataclass(slots=True)
class _Entry:
    tokens: int
    ttl: float
    expires_at: float
    ready_at: float


@dataclass(frozen=True, slots=True)
class PendingWrite:
    """A cache entry a request will create once its response begins."""

    key: _Key
    ttl: float
    tokens: int


@dataclass(slots=True)
class CacheAccount:
    """What one request read and wrote. ``usage`` has the four input fields; ``output_tokens`` is 0."""

    usage: Usage
    started_at: float
    writes: tuple[PendingWrite, ...] = ()
    breakpoints: tuple[int, ...] = ()  # block indexes (prompt order) of the effective breakpoints
    hit_block: int | None = None  # block index where the longest cache hit ends
    activated: bool = field(default=False)


@dataclass(frozen=True, slots=True)
class _Breakpoint:
    index: int
    ttl: str
    path: str


def _ttl_of(control: Any, path: str) -> str:
    ttl = ttl_of(control)
    if ttl is None:  # the API's 400 (the planner, which must never refuse, plans such a marker as "5m")
        raise InvalidRequestError(f"{path}.ttl: Input should be '5m' or '1h'")
    return ttl


def _is_empty_text(block: Mapping[str, Any]) -> bool:
    return block.get("type") == "text" and not block.get("text")


def _breakpoints(body: Mapping[str, Any], blocks: Sequence[PromptBlock]) -> list[_Breakpoint]:
    """The request's breakpoints in prompt order, after the API's checks (400s raised here)."""
    found = count_cache_breakpoints(body)
    if found > MAX_CACHE_BREAKPOINTS:
        raise InvalidRequestError(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {found}."
        )
    points: list[_Breakpoint] = []
    for index, pb in enumerate(blocks):
        control = pb.block.get("cache_control")
        if not control:
            continue
        ttl = _ttl_of(control, f"{pb.path}.cache_control")
        if _is_empty_text(pb.block):
            raise InvalidRequestError(f"{pb.path}.text: cache_control cannot be set for empty text blocks")
        if not cacheable(pb.block):
            continue  # "Thinking blocks cannot be cached directly with cache_control": no entry written there
        points.append(_Breakpoint(index, ttl, f"{pb.path}.cache_control.ttl"))
    top = body.get("cache_control")
    if top:
        ttl = _ttl_of(top, "cache_control")
        target = next(
            (i for i in range(len(blocks) - 1, -1, -1) if cacheable(blocks[i].block)),
            None,
        )
        if target is not None:
            explicit = next((p for p in points if p.index == target), None)
            if explicit is None:
                points.append(_Breakpoint(target, ttl, "cache_control.ttl"))
            elif explicit.ttl != ttl:
                raise InvalidRequestError(
                    f"cache_control.ttl: the top-level cache_control has ttl='{ttl}' but the last cacheable block "
                    f"({blocks[target].path}) already has a cache_control with ttl='{explicit.ttl}'."
                )
    points.sort(key=lambda p: p.index)
    seen_5m = False
    for point in points:
        if point.ttl == "5m":
            seen_5m = True
        elif seen_5m:
            raise InvalidRequestError(f"{point.path}: {_TTL_ORDER_MESSAGE}")
    return points


class PromptCache:
    """Prompt-cache entries of every workspace and model, with their lifetimes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._entries: dict[_Key, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def _live(self, key: _Key, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._entries[key]  # lazily evict what we meet expired
            return None
        return entry if entry.ready_at <= now else None

    def account(
        self,
        workspace: str,
        body: Mapping[str, Any],
        *,
        min_cacheable_tokens: int,
        now: float | None = None,
    ) -> CacheAccount:
        """Price ``body``'s prompt against the cache at ``now`` (default: the clock) and record its writes.

        Raises ``InvalidRequestError`` for the cache_control mistakes the API rejects. Reads refresh the entries
        they use at once; writes wait for ``activate``.
        """
        now = self.clock() if now is None else now
        blocks, tail = prompt_blocks(body)
        total = sum(pb.tokens for pb in blocks) + tail
        points = _breakpoints(body, blocks)
        if not points:
            return CacheAccount(Usage(input_tokens=total), started_at=now)
        cumulative: list[int] = []
        running = 0
        for pb in blocks:
            running += pb.tokens
            cumulative.append(running)
        model = str(body.get("model", ""))
        digests = prefix_digests(body, blocks, points[-1].index)

        def key(i: int) -> _Key:
            return (workspace, model, digests[i])

        hit: int | None = None
        for point in points:
            if not long_enough(cumulative[point.index], min_cacheable_tokens):
                continue
            found = self._lookback(blocks, point.index, key, now)
            if found is not None and (hit is None or found > hit):
                hit = found
        read = cumulative[hit] if hit is not None else 0
        written = [p for p in points if long_enough(cumulative[p.index], min_cacheable_tokens)]
        after_hit = [p for p in written if hit is None or p.index > hit]
        b_tokens = max((cumulative[p.index] for p in after_hit if p.ttl == "1h"), default=read)
        c_tokens = max(cumulative[after_hit[-1].index], b_tokens) if after_hit else read
        usage = Usage(
            input_tokens=total - c_tokens,
            cache_read_input_tokens=read,
            cache_write_1h_input_tokens=b_tokens - read,
            cache_write_5m_input_tokens=c_tokens - b_tokens,
        )
        writes: list[PendingWrite] = []
        for point in written:
            entry = self._live(key(point.index), now)
            if hit is not None and point.index <= hit and entry is not None:
                entry.expires_at = max(entry.expires_at, now + entry.ttl)  # used: refreshed for free
            elif entry is None:
                # A breakpoint inside the hit costs nothing to (re)write; later ones are the writes billed above.
                writes.append(PendingWrite(key(point.index), TTL_SECONDS[point.ttl], cumulative[point.index]))
        if hit is not None:
            used = self._live(key(hit), now)
            if used is not None:
                used.expires_at = max(used.expires_at, now + used.ttl)
        return CacheAccount(
            usage,
            started_at=now,
            writes=tuple(writes),
            breakpoints=tuple(p.index for p in points),
            hit_block=hit,
        )

    def _lookback(
        self, blocks: Sequence[PromptBlock], start: int, key: Callable[[int], _Key], now: float
    ) -> int | None:
        """The last block index at or before ``start`` whose prefix is cached, within the lookback window."""
        positions = 1
        for i in range(start, -1, -1):
            if i < start and new_position(blocks, i):
                positions += 1
                if positions > LOOKBACK_POSITIONS:
                    return None
            if self._live(key(i), now) is not None:
                return i
        return None

    def activate(self, account: CacheAccount, at: float | None = None) -> None:
        """The response that writes ``account``'s entries has begun: make them readable from ``at``.

        Their lifetime still runs from the start of the request. Activating twice does nothing.
        """
        if account.activated:
            return
        account.activated = True
        at = self.clock() if at is None else at
        for write in account.writes:
            expires_at = account.started_at + write.ttl
            if expires_at <= at:
                continue
            entry = self._entries.get(write.key)
            if entry is not None and entry.expires_at > at:
                entry.expires_at = max(entry.expires_at, expires_at)
                entry.ready_at = min(entry.ready_at, at)
            else:
                self._entries[write.key] = _Entry(write.tokens, write.ttl, expires_at, at)
        if len(self._entries) > self.max_entries:
            self._evict(at)

    def _evict(self, now: float) -> None:
        """Drop expired entries; if still over the bound, those closest to expiry, down to 90 % of it."""
        for key in [k for k, e in self._entries.items() if e.expires_at <= now]:
            del self._entries[key]
        excess = len(self._entries) - int(self.max_entries * 0.9)
        if excess > 0:
            for key, _ in heapq.nsmallest(excess, self._entries.items(), key=lambda item: item[1].expires_at):
                del self._entries[key]
