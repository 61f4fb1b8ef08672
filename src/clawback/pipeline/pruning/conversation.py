"""Turns: the units pruning keeps or drops whole, and a fast token estimate to schedule by.

Why whole turns: a turn starts at a user message that carries no ``tool_result`` (a new human turn) and runs
until the next one, so every ``tool_use`` / ``tool_result`` pair, every thinking block and every unknown block
lives inside exactly one turn. Keeping or dropping turns whole keeps the conversation valid by construction:
no orphaned tool result, no tool use without its answer, role order as the client sent it.

Why a separate token estimate: ``clawback.tokens`` is accurate but costs ~0.1 us per character; pruning a
100-turn history must take a few milliseconds, and its decisions only need to be deterministic and roughly
proportional to the billed tokens. The estimate here is characters / 4 (scaled by the model's tokenizer
factor) for text, and ``clawback.tokens`` for images and documents (header-parsed, cheap).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from clawback.tokens import MESSAGE_OVERHEAD, estimate_block_tokens, fast_tokens

__all__ = [
    "Turn",
    "block_text",
    "fast_block_tokens",
    "fold",
    "is_turn_start",
    "loop_start",
    "message_text",
    "split_turns",
]

_THINKING = frozenset({"thinking", "redacted_thinking"})
_MEDIA = frozenset({"image", "document"})
# The characters that ``re.IGNORECASE`` equates with an ASCII letter although ``str.lower`` does not map them to
# it, or that ``str.lower`` maps to ASCII: dotted capital I, dotless i, long s, Kelvin sign.
_FOLDS_ODDLY = re.compile("[\u0130\u0131\u017f\u212a]")


def fold(text: str) -> str | None:
    """``text`` lower-cased, when a case-sensitive pattern of lower-case ASCII on it matches exactly what the
    ``re.IGNORECASE`` pattern matches on ``text`` (and ``\\w`` / ``\\b`` fall in the same places); ``None``
    when ``text`` holds one of the few characters for which that does not hold (then use the slow pattern)."""
    return None if not text.isascii() and _FOLDS_ODDLY.search(text) else text.lower()


def is_turn_start(message: Mapping[str, Any]) -> bool:
    """A user message without ``tool_result`` blocks opens a new turn (one with results answers the last)."""
    if message.get("role") != "user":
        return False
    content = message.get("content")
    if isinstance(content, list):
        return not any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
    return True


def loop_start(messages: Sequence[Any]) -> int | None:
    """The index of the message that opened the turn in progress, when a tool loop has followed it (the
    request answers at least one round of tool results); ``None`` otherwise. Scans from the end: cheap."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and is_turn_start(message):
            return index if index < len(messages) - 1 else None
    return None


def _chars_tokens(chars: int, factor: float) -> int:
    return fast_tokens(chars, factor) + 1


def fast_block_tokens(block: Mapping[str, Any], factor: float = 1.0) -> int:
    """A quick, deterministic token estimate of one content block (thinking blocks count 0: the API ignores
    the thinking of previous turns, and pruning never decides on the turn in progress)."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return _chars_tokens(len(text), factor) if isinstance(text, str) else 1
    if kind in _THINKING:
        return 0
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return 3 + _chars_tokens(len(content), factor)
        if isinstance(content, list):
            return 3 + sum(fast_block_tokens(b, factor) for b in content if isinstance(b, dict))
        return 3
    if kind in _MEDIA:
        return estimate_block_tokens(block)
    try:
        size = len(orjson.dumps(block, default=str))
    except TypeError:  # e.g. an integer beyond 64 bits in a block built in Python (the SDK wrapper)
        size = len(str(block))
    return 3 + _chars_tokens(size, factor)


def block_text(block: Mapping[str, Any]) -> str:
    """The readable text of a block (text, tool result text); empty for anything else."""
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return text if isinstance(text, str) else ""
    if kind == "tool_result":
        content = block.get("content")
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "\n".join(block_text(b) for b in content if isinstance(b, dict))
    return ""


def message_text(message: Mapping[str, Any], *, include_tool_results: bool = False) -> str:
    """The text blocks of a message joined by newlines (tool results only when asked)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts: list[str] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text" or (include_tool_results and block.get("type") == "tool_result"):
            parts.append(block_text(block))
    return "\n".join(p for p in parts if p)


@dataclass(frozen=True, slots=True)
class Turn:
    """Messages ``[start, end)`` of the request: one human turn and everything that answers it."""

    index: int
    start: int
    end: int
    tokens: int
    opener: bool = False  # turn 0 when the conversation does not begin with a human turn


def split_turns(
    messages: Sequence[Any], factor: float = 1.0, texts: list[tuple[Any, str] | None] | None = None
) -> list[Turn]:
    """The request's turns in order. Messages before the first human turn (an assistant opener) form turn 0.

    One pass over the blocks: ``is_turn_start`` and the turn's ``fast_block_tokens`` inlined for the common
    blocks (text, string tool results), the same figures as calling them. ``texts``, when given, receives each
    message's ``(role, message_text(message))`` (``None`` for a message that is not a dict): the pruner needs
    them for fact extraction and relevance, and collecting them here spares a second walk over the blocks.
    """
    turns: list[Turn] = []
    start = 0
    tokens = 0
    opener = False
    for i, message in enumerate(messages):
        size = MESSAGE_OVERHEAD
        begins = False
        text_of: tuple[Any, str] | None = None
        if isinstance(message, dict):
            content = message.get("content")
            role = message.get("role")
            if isinstance(content, str):
                size += fast_tokens(len(content), factor) + 1
                begins = role == "user"
                text_of = (role, content)
            elif isinstance(content, list):
                answers = False
                parts: list[str] = []  # ``message_text``: the non-empty text blocks, joined by newlines
                for block in content:
                    if not isinstance(block, dict):
                        continue
                    kind = block.get("type")
                    if kind == "text":
                        text = block.get("text")
                        if isinstance(text, str):
                            size += fast_tokens(len(text), factor) + 1
                            if text:
                                parts.append(text)
                        else:
                            size += 1
                        continue
                    if kind == "tool_result":
                        answers = True
                        inner = block.get("content")
                        if isinstance(inner, str):
                            size += 4 + fast_tokens(len(inner), factor)
                            continue
                    size += fast_block_tokens(block, factor)
                begins = not answers and role == "user"
                text_of = (role, "\n".join(parts))
            else:
                begins = role == "user"
                text_of = (role, "")
        if texts is not None:
            texts.append(text_of)
        if i == 0:
            opener = not begins
        elif begins:
            turns.append(Turn(len(turns), start, i, tokens, opener and not turns))
            start, tokens = i, 0
        tokens += size
    if messages:
        turns.append(Turn(len(turns), start, len(messages), tokens, opener and not turns))
    return turns
