"""What the simulator answers.

Replies are deterministic for a given seed and request, so a benchmark or a test that replays the same
traffic sees the same tokens and the same bill. Three modes: ``echo`` (repeat the last user text),
``template`` (fill ``reply_template``), ``script`` (the first ``{match: regex, reply: text}`` rule that
matches the last user text). The reply is padded or cut to ``output_tokens`` (capped by ``max_tokens``)
so that output size is a setting, not an accident of the prompt.

A script rule may also call a tool, so that a real agent (Claude Code) runs one: ``{match, tool: Bash, input:
{command: "echo hi"}, reply: "It printed {tool_result}"}``. On the human turn that matches, when the request
offers a tool of that name, the answer is that ``tool_use``; once the client sends the ``tool_result``, the
answer is ``reply`` with ``{tool_result}`` replaced by the result's text. The match is against the user text
that opened the turn (a tool_result message carries none of its own).
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from clawback.api.messages import MessagesRequest, content_blocks
from clawback.config import SimulatorSettings
from clawback.tokens import estimate_block_tokens, estimate_text_tokens

__all__ = ["Reply", "ReplyGenerator", "ScriptRule"]

_FILLER = [
    "the",
    "buyer",
    "prefers",
    "homes",
    "near",
    "good",
    "schools",
    "with",
    "a",
    "garden",
    "and",
    "a",
    "short",
    "commute",
    "pricing",
    "reflects",
    "recent",
    "sales",
    "in",
    "the",
    "area",
    "and",
    "we",
    "can",
    "arrange",
    "a",
    "viewing",
    "this",
    "week",
]


@functools.cache
def _filler_tokens(word: str) -> int:
    return estimate_text_tokens(word)


@dataclass(frozen=True, slots=True)
class ScriptRule:
    pattern: re.Pattern[str]
    reply: str
    tool: str | None = None
    input: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Reply:
    """The content blocks of one answer, with why it stopped and how many output tokens it is."""

    content: list[dict[str, Any]]
    stop_reason: str
    output_tokens: int
    text_chunks: list[list[str]] = field(default_factory=list)


def load_script(path: str | Path) -> list[ScriptRule]:
    rules = yaml.safe_load(Path(path).read_text()) or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) and "match" in r and "reply" in r for r in rules):
        raise ValueError(f"{path}: expected a list of {{match: regex, reply: text[, tool: name, input: {{}}]}} rules")
    if not all(isinstance(r.get("input", {}), dict) for r in rules):
        raise ValueError(f"{path}: a rule's `input` must be a mapping (the tool's arguments)")
    return [_rule_of(r) for r in rules]


def _rule_of(rule: dict[str, Any]) -> ScriptRule:
    tool = str(rule["tool"]) if rule.get("tool") else None
    return ScriptRule(
        re.compile(str(rule["match"]), re.IGNORECASE), str(rule["reply"]), tool, dict(rule.get("input") or {})
    )


def last_user_text(request: MessagesRequest) -> str:
    for message in reversed(request.messages):
        if message.get("role") != "user":
            continue
        texts = [b.get("text", "") for b in content_blocks(message) if b.get("type") == "text"]
        if texts:
            return " ".join(str(t) for t in texts)
    return ""


def turn_text(request: MessagesRequest) -> str:
    """The user text that opened the turn in progress (a user message without tool results)."""
    for message in reversed(request.messages):
        if message.get("role") != "user":
            continue
        blocks = content_blocks(message)
        if any(b.get("type") == "tool_result" for b in blocks):
            continue
        return " ".join(str(b.get("text", "")) for b in blocks if b.get("type") == "text")
    return ""


def _tool_result_text(request: MessagesRequest) -> str:
    """The text of the tool results of the last message."""
    parts: list[str] = []
    for block in content_blocks(request.messages[-1]) if request.messages else []:
        if block.get("type") != "tool_result":
            continue
        content = block.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(c.get("text", "")) for c in content if isinstance(c, dict) and c.get("type") == "text")
    return "\n".join(parts).strip()


def _last_turn_is_tool_result(request: MessagesRequest) -> bool:
    if not request.messages:
        return False
    return any(b.get("type") == "tool_result" for b in content_blocks(request.messages[-1]))


def _chunks(words: list[str], size: int = 3) -> list[str]:
    """Split a reply into stream deltas of a few words each, as the API does."""
    return [" ".join(words[i : i + size]) + (" " if i + size < len(words) else "") for i in range(0, len(words), size)]


class ReplyGenerator:
    def __init__(self, settings: SimulatorSettings, script: list[ScriptRule] | None = None) -> None:
        self.settings = settings
        self.script = (
            script if script is not None else (load_script(settings.script_file) if settings.script_file else [])
        )

    def _rule(self, request: MessagesRequest, prompt: str) -> ScriptRule | None:
        """The script rule that answers this request (script mode), matched on the turn's opening text."""
        if self.settings.reply_mode != "script":
            return None
        text = turn_text(request) if _last_turn_is_tool_result(request) else prompt
        return next((rule for rule in self.script if rule.pattern.search(text)), None)

    def _text(self, request: MessagesRequest, prompt: str) -> str:
        mode = self.settings.reply_mode
        if mode == "echo":
            return prompt or "(empty)"
        if mode == "script":
            rule = self._rule(request, prompt)
            if rule is not None:
                if rule.tool is not None and _last_turn_is_tool_result(request):
                    return rule.reply.replace("{tool_result}", _tool_result_text(request))
                return rule.reply
        try:
            return self.settings.reply_template.format(last_user_text=prompt[:200], model=request.model)
        except (KeyError, IndexError, ValueError):
            return self.settings.reply_template

    @staticmethod
    @functools.lru_cache(maxsize=4096)
    def _sized_words(text: str, target_tokens: int, seed: str) -> tuple[list[str], bool]:
        """Words of ``text`` padded with seeded filler (or cut) to about ``target_tokens``.

        Padding adds each filler word's own count (counts of space-separated words add up); one exact count
        at the end corrects any drift, and a cut is a binary search over prefixes, so a reply costs a few
        token counts rather than one per word (this loop dominated the simulator's profile).
        """
        words = text.split()
        digest = int(hashlib.blake2b(seed.encode(), digest_size=8).hexdigest(), 16)
        count = estimate_text_tokens(" ".join(words))
        i = 0
        while count < target_tokens:
            word = _FILLER[(digest + i) % len(_FILLER)]
            words.append(word)
            count += _filler_tokens(word)
            i += 1
        count = estimate_text_tokens(" ".join(words))
        while count < target_tokens:
            words.append(_FILLER[(digest + i) % len(_FILLER)])
            i += 1
            count = estimate_text_tokens(" ".join(words))
        if count <= target_tokens:
            return words, False
        low, high = 1, len(words)  # the longest prefix within the target; at least one word
        while low < high:
            middle = (low + high + 1) // 2
            if estimate_text_tokens(" ".join(words[:middle])) <= target_tokens:
                low = middle
            else:
                high = middle - 1
        return words[:low], True

    def generate(self, body: Mapping[str, Any], request_index: int) -> Reply:
        request = MessagesRequest(dict(body))
        prompt = last_user_text(request)
        budget = request.max_tokens
        # The same prompt gets the same answer (as with temperature 0), so sizing is memoized.
        seed = f"{self.settings.seed}:{prompt[:64]}"
        content: list[dict[str, Any]] = []
        chunks: list[list[str]] = []
        used = 0

        thinking = body.get("thinking")
        if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive") and budget > 1:
            thought = f"The user asks: {prompt[:120]}. Answer from the conversation so far."
            words = list(self._sized_words(thought, min(32, budget // 2), seed + ":think")[0])
            sig = hashlib.sha256((seed + " ".join(words)).encode()).hexdigest()
            block: dict[str, Any] = {"type": "thinking", "thinking": " ".join(words), "signature": sig}
            content.append(block)
            chunks.append(_chunks(words))
            used += estimate_block_tokens(block, request.model)

        rule = self._rule(request, prompt)
        if rule is not None:  # a scripted turn: its tool (when offered and not yet answered), else its text
            offered = any(t.get("name") == rule.tool for t in request.tools)
            call = rule.tool is not None and offered and not _last_turn_is_tool_result(request)
            tool = {"name": rule.tool} if call else None
            arguments = rule.input
        else:
            tool = self._tool_to_call(request)
            arguments = self._tool_input(tool, prompt) if tool is not None else {}
        if tool is not None and budget - used > 0:
            block = {
                "type": "tool_use",
                "id": "toolu_" + hashlib.sha256(f"{seed}:{request_index}:tool".encode()).hexdigest()[:24],
                "name": tool["name"],
                "input": arguments,
            }
            content.append(block)
            chunks.append([])
            used += estimate_block_tokens(block, request.model)
            return Reply(content=content, stop_reason="tool_use", output_tokens=max(used, 1), text_chunks=chunks)

        room = max(budget - used, 0)
        target = min(self.settings.output_tokens, room)
        if target <= 0:
            return Reply(content=content, stop_reason="max_tokens", output_tokens=used, text_chunks=chunks)
        words = list(self._sized_words(self._text(request, prompt), target, seed)[0])
        text = " ".join(words)
        content.append({"type": "text", "text": text})
        chunks.append(_chunks(words))
        used += estimate_text_tokens(text, request.model)
        # The answer "wanted" output_tokens; when max_tokens leaves less room, it was cut short.
        stop = "max_tokens" if self.settings.output_tokens > room else "end_turn"
        return Reply(content=content, stop_reason=stop, output_tokens=used, text_chunks=chunks)

    @staticmethod
    def _tool_to_call(request: MessagesRequest) -> dict[str, Any] | None:
        """Call a tool when asked to, or on a fresh user turn when tools are offered (``auto``).

        After a ``tool_result`` the simulator answers in text, so an agent loop ends after one round trip.
        """
        tools = [t for t in request.tools if isinstance(t.get("name"), str)]
        if not tools:
            return None
        choice = request.body.get("tool_choice")
        kind = choice.get("type") if isinstance(choice, dict) else "auto"
        if kind == "none":
            return None
        if kind == "tool" and isinstance(choice, dict):
            named = [t for t in tools if t["name"] == choice.get("name")]
            return named[0] if named else tools[0]
        if kind == "any":
            return tools[0]
        return None if _last_turn_is_tool_result(request) else tools[0]

    @staticmethod
    def _tool_input(tool: Mapping[str, Any], prompt: str) -> dict[str, Any]:
        """Fill the tool's required string/number/boolean properties with plausible values."""
        schema = tool.get("input_schema") if isinstance(tool.get("input_schema"), dict) else {}
        props = schema.get("properties", {}) if isinstance(schema, dict) else {}
        result: dict[str, Any] = {}
        for name, spec in props.items() if isinstance(props, dict) else []:
            kind = spec.get("type") if isinstance(spec, dict) else None
            if kind in ("integer", "number"):
                result[name] = 1
            elif kind == "boolean":
                result[name] = True
            elif kind == "array":
                result[name] = []
            elif kind == "object":
                result[name] = {}
            else:
                result[name] = prompt[:40] or name
        return result
