"""The API's prompt-cache rules, in one place: the planner predicts by them, the simulator bills by them.

From https://platform.claude.com/docs/en/build-with-claude/prompt-caching (read 2026-11); the simulator's module
(``upstream.simulator.prompt_cache``) quotes the passage behind each rule.

* TTLs: ``"5m"`` (default) and ``"1h"``; a 1-hour entry must precede every 5-minute one.
* A write happens only at a breakpoint, keyed by the prefix up to it (``prefix_digests``); a read looks back at
  most ``LOOKBACK_POSITIONS`` positions from a breakpoint, the breakpoint itself the first, a run of consecutive
  ``tool_use`` or of ``tool_result`` blocks one position (``new_position``).
* Thinking blocks and empty text blocks cannot be cached (``cacheable``): automatic caching walks back past them.
* A prefix shorter than the model's minimum (``min_cacheable_tokens`` per model in the price table) is neither
  written nor read (``long_enough``).
* What invalidates a level without changing its blocks (``level_salts``): ``speed`` for system and messages;
  ``tool_choice``, the thinking settings, ``output_config.effort`` and the presence of images anywhere in the
  prompt (an image inside a ``tool_result`` included) for messages.

The functions read any block with the fields of ``PrefixBlock`` (``tokens.PromptBlock`` has them), so this
module needs nothing above ``api/``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import orjson

from clawback.api.messages import strip_cache_control

__all__ = [
    "LOOKBACK_POSITIONS",
    "MARKABLE_BLOCKS",
    "NOT_CACHEABLE",
    "RUN_TYPES",
    "TTL_SECONDS",
    "PrefixBlock",
    "cacheable",
    "has_image",
    "level_salts",
    "long_enough",
    "lookback_positions",
    "markable",
    "new_position",
    "prefix_digests",
    "ttl_of",
]

TTL_SECONDS: dict[str, float] = {"5m": 300.0, "1h": 3600.0}
LOOKBACK_POSITIONS = 20
#: Block kinds whose consecutive runs count as one lookback position.
RUN_TYPES = frozenset({"tool_use", "tool_result"})
#: Block kinds that cannot carry a cache entry ("Thinking blocks cannot be cached directly with cache_control").
NOT_CACHEABLE = frozenset({"thinking", "redacted_thinking"})


class PrefixBlock(Protocol):
    """One block of the prompt in prefix order (``tools`` -> ``system`` -> ``messages``)."""

    @property
    def section(self) -> str: ...
    @property
    def block(self) -> Mapping[str, Any]: ...
    @property
    def role(self) -> str | None: ...
    @property
    def first_in_message(self) -> bool: ...
    @property
    def message_fields(self) -> bytes: ...


def ttl_of(control: Any) -> str | None:
    """The TTL a ``cache_control`` asks for (``"5m"`` when it names none), or None when it is not one the API
    knows (the API answers 400; what to do with it is the caller's: the simulator refuses, the planner never does)."""
    ttl = control.get("ttl", "5m") if isinstance(control, Mapping) else "5m"
    return ttl if ttl in TTL_SECONDS else None


def cacheable(block: Mapping[str, Any]) -> bool:
    """Whether a breakpoint on ``block`` writes an entry (not thinking, not empty text)."""
    kind = block.get("type")
    if kind in NOT_CACHEABLE:
        return False
    return not (kind == "text" and not block.get("text"))


#: Message blocks a ``cache_control`` marker may be put on: the block params of the ``anthropic`` SDK (2.16) that
#: have a ``cache_control`` field. A block of any other type (``fallback``, ``mcp_tool_listing``, one newer than
#: this list) is left as the client sent it: a marker there could make the API refuse the request
#: (``tests/unit/test_prompt_cache_plan.py`` checks the list against the installed SDK).
MARKABLE_BLOCKS = frozenset({
    "text", "image", "document", "search_result", "tool_use", "tool_result", "server_tool_use",
    "web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result",
    "bash_code_execution_tool_result", "text_editor_code_execution_tool_result", "tool_search_tool_result",
    "container_upload", "mcp_tool_use", "mcp_tool_result", "advisor_tool_result", "compaction", "tool_addition",
    "tool_removal",
})  # fmt: skip


def markable(block: Mapping[str, Any]) -> bool:
    """A message block a marker may be added to: one whose type takes ``cache_control`` and that is cacheable."""
    return block.get("type") in MARKABLE_BLOCKS and cacheable(block)


def long_enough(prefix_tokens: int, min_cacheable_tokens: int) -> bool:
    """Whether a prefix of ``prefix_tokens`` is cached at all (below the model's minimum: no read, no write)."""
    return prefix_tokens >= min_cacheable_tokens


def has_image(blocks: Sequence[PrefixBlock]) -> bool:
    """Whether the prompt holds an image, as a block or inside a block's content (a ``tool_result``'s)."""
    for pb in blocks:
        if pb.block.get("type") == "image":
            return True
        content = pb.block.get("content")
        if isinstance(content, list) and any(isinstance(c, Mapping) and c.get("type") == "image" for c in content):
            return True
    return False


def level_salts(body: Mapping[str, Any], blocks: Sequence[PrefixBlock]) -> dict[str, bytes]:
    """What invalidates the system / messages levels without changing their blocks (the docs' table)."""
    output_config = body.get("output_config")
    effort = output_config.get("effort") if isinstance(output_config, Mapping) else None
    system = [body.get("speed")]
    messages = [*system, body.get("tool_choice"), body.get("thinking"), effort, has_image(blocks)]
    return {"tools": b"", "system": orjson.dumps(system, default=str), "messages": orjson.dumps(messages, default=str)}


def prefix_digests(body: Mapping[str, Any], blocks: Sequence[PrefixBlock], upto: int | None = None) -> list[bytes]:
    """``digests[i]`` names the prefix of blocks ``0..i`` as the cache keys it (markers excluded: identical content
    carrying different markers matches; key order as sent), for every block or up to ``upto``."""
    salts = level_salts(body, blocks)
    hasher = hashlib.blake2b(digest_size=16)
    out: list[bytes] = []
    for pb in blocks if upto is None else blocks[: upto + 1]:
        hasher.update(salts[pb.section])
        hasher.update(
            orjson.dumps([pb.section, pb.role, pb.first_in_message, strip_cache_control(pb.block)], default=str)
            + pb.message_fields
        )
        hasher.update(b"\x00")
        out.append(hasher.copy().digest())
    return out


def new_position(blocks: Sequence[PrefixBlock], index: int) -> bool:
    """Whether stepping back from block ``index + 1`` to ``index`` takes a new lookback position (it does unless
    both are ``tool_use``, or both ``tool_result``)."""
    kind = blocks[index].block.get("type")
    return not (kind in RUN_TYPES and blocks[index + 1].block.get("type") == kind)


def lookback_positions(blocks: Sequence[PrefixBlock], earlier: int, start: int) -> int:
    """Positions the lookback from ``start`` walks to reach ``earlier`` (``start`` itself is position 1)."""
    return 1 + sum(1 for i in range(start - 1, earlier - 1, -1) if new_position(blocks, i))
