"""Views over Messages API requests, and the checks the real API applies to them.

A request stays the client's own ``dict`` from start to finish: stages read it through ``MessagesRequest``
and change it only where they mean to, so a field this code has never heard of (the API grows every month:
``context_management``, ``output_config``, ``mcp_servers``, new block types) reaches the upstream exactly as
sent. We deliberately do not round-trip bodies through pydantic models here: that costs a few hundred
microseconds per request on the gateway's hot path and silently reorders or drops what a model did not
declare.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson

from clawback.api.errors import InvalidRequestError

__all__ = [
    "MAX_CACHE_BREAKPOINTS",
    "MESSAGE_ROLES",
    "SYSTEM_MESSAGE_BLOCKS",
    "MessagesRequest",
    "check_tool_pairing",
    "count_cache_breakpoints",
    "iter_prompt_blocks",
    "parse_json_body",
    "strip_cache_control",
    "validate_messages_request",
]

MAX_CACHE_BREAKPOINTS = 4


def parse_json_body(raw: bytes) -> dict[str, Any]:
    """Decode a request body that must be a JSON object."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"There was an error parsing the body of your request as JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return body


class MessagesRequest:
    """Typed reads over a request body; the body itself is ``.body`` and is never copied."""

    __slots__ = ("body",)

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", False))

    @property
    def max_tokens(self) -> int:
        value = self.body.get("max_tokens", 0)
        return value if isinstance(value, int) else 0

    @property
    def messages(self) -> list[dict[str, Any]]:
        value = self.body.get("messages")
        return value if isinstance(value, list) else []

    @property
    def system_blocks(self) -> list[dict[str, Any]]:
        """The system prompt as a list of blocks (a plain string counts as one text block)."""
        system = self.body.get("system")
        if isinstance(system, str):
            return [{"type": "text", "text": system}] if system else []
        return [b for b in system if isinstance(b, dict)] if isinstance(system, list) else []

    @property
    def tools(self) -> list[dict[str, Any]]:
        value = self.body.get("tools")
        return [t for t in value if isinstance(t, dict)] if isinstance(value, list) else []

    @property
    def inference_geo(self) -> str | None:
        value = self.body.get("inference_geo")
        return value if isinstance(value, str) else None

    @property
    def speed(self) -> str | None:
        value = self.body.get("speed")
        return value if isinstance(value, str) else None


def content_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A message's content as blocks (a plain string is one text block)."""
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def iter_prompt_blocks(body: Mapping[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every block of the prompt in cache-prefix order: tools, then system, then messages.

    Yields ``(section, block)`` with section ``"tools"``, ``"system"`` or ``"messages"``. A mid-conversation
    ``role: "system"`` message is a message like the others here: its blocks come in message order, under
    ``"messages"`` (the API hashes the prefix "tools, then system, then messages").
    """
    view = MessagesRequest(dict(body))
    for tool in view.tools:
        yield "tools", tool
    for block in view.system_blocks:
        yield "system", block
    for message in view.messages:
        if isinstance(message, dict):
            for block in content_blocks(message):
                yield "messages", block


def strip_cache_control(block: Mapping[str, Any]) -> dict[str, Any]:
    """A block without its ``cache_control`` marker (nor those of its sub-blocks): what a cache prefix hashes.

    The API keys cached prefixes on content, not on where the breakpoints sit, so both the simulator's cache
    and the planner compare blocks in this form.
    """
    out = {k: v for k, v in block.items() if k != "cache_control"}
    content = out.get("content")
    if isinstance(content, list) and any(isinstance(c, Mapping) and "cache_control" in c for c in content):
        out["content"] = [strip_cache_control(c) if isinstance(c, Mapping) else c for c in content]
    return out


def count_cache_breakpoints(body: Mapping[str, Any]) -> int:
    """Explicit ``cache_control`` markers plus the top-level automatic one (it takes a slot too)."""
    count = sum(1 for _, block in iter_prompt_blocks(body) if block.get("cache_control"))
    if body.get("cache_control"):
        count += 1
    return count


def _type_error(field: str, expected: str) -> InvalidRequestError:
    return InvalidRequestError(f"{field}: Input should be {expected}")


#: The roles a message may have: ``system`` since the mid-conversation system messages (Opus 4.8 first; the
#: SDK types ``SystemMessageParam`` / ``BetaSystemMessageParam`` in the ``MessageParam`` union).
MESSAGE_ROLES = ("user", "assistant", "system")
#: Block types a system message may carry: text, plus the beta's mid-conversation tool changes.
SYSTEM_MESSAGE_BLOCKS = ("text", "tool_addition", "tool_removal")
_EFFORTS = ("low", "medium", "high", "xhigh", "max")
_CLEAR_AT = ("next_user_message", "never")


def _choices(values: tuple[str, ...]) -> str:
    """Pydantic's wording for a literal: ``'a', 'b' or 'c'``."""
    quoted = [f"'{v}'" for v in values]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _check_system_message(message: Mapping[str, Any], i: int) -> None:
    """A ``role: "system"`` message as the SDK types it (``BetaSystemMessageParam``, a superset of
    ``SystemMessageParam``): content a string or text / tool-change blocks, optional ``output_config``
    (``effort`` only) and ``clear_at``; "a message with neither content nor output_config fields is rejected"."""
    content = message.get("content")
    if "content" not in message or content is None:
        if not message.get("output_config"):  # ("An empty {} is accepted on a message that carries content")
            raise InvalidRequestError(f"messages.{i}: a system message needs `content` or `output_config`")
    elif isinstance(content, list):
        for j, block in enumerate(content):
            if not isinstance(block, dict) or block.get("type") not in SYSTEM_MESSAGE_BLOCKS:
                raise _type_error(f"messages.{i}.content.{j}.type", _choices(SYSTEM_MESSAGE_BLOCKS))
    elif not isinstance(content, str):
        raise _type_error(f"messages.{i}.content", "a valid string or a list of text blocks")
    output_config = message.get("output_config")
    if output_config is not None:
        if not isinstance(output_config, dict):
            raise _type_error(f"messages.{i}.output_config", "a valid dictionary")
        effort = output_config.get("effort")
        if effort is not None and effort not in _EFFORTS:
            raise _type_error(f"messages.{i}.output_config.effort", _choices(_EFFORTS))
    clear_at = message.get("clear_at")
    if clear_at is not None and clear_at not in _CLEAR_AT:
        raise _type_error(f"messages.{i}.clear_at", _choices(_CLEAR_AT))


def _check_system_placement(messages: list[dict[str, Any]]) -> None:
    """Where a system message may sit. The docs: Opus 4.8 "accepts role: "system" messages immediately after a
    user turn in the messages array (subject to placement rules)"; the placement rules as the SDKs apply them:
    it follows a user message and either ends the array or precedes an assistant message (so never first, and
    never two in a row). The wording of these messages is ours: the API's exact text is not published."""
    for i, message in enumerate(messages):
        if message.get("role") != "system":
            continue
        if i == 0 or messages[i - 1].get("role") != "user":
            raise InvalidRequestError(
                f"messages.{i}: a system message must immediately follow a user message "
                "(use the top-level `system` parameter for instructions before the conversation)"
            )
        if i + 1 < len(messages) and messages[i + 1].get("role") != "assistant":
            raise InvalidRequestError(
                f"messages.{i}: a system message must be the last message or be followed by an assistant message"
            )


def validate_messages_request(body: Mapping[str, Any], *, strict: bool = True) -> None:
    """Raise ``InvalidRequestError`` for a request the real API would reject with a 400: the simulator's check.

    Not the gateway's: the gateway forwards what it does not understand and lets the upstream answer
    (``clawback.api.gateway_checks``). ``strict=False`` checks only the shape (required fields and their types,
    roles, what a system message may hold), as for ``count_tokens``; ``strict=True`` adds the API's semantic
    rules (system message placement, tool_use/tool_result pairing, the breakpoint limit).
    """
    for field in ("model", "max_tokens", "messages"):
        if field not in body:
            raise InvalidRequestError(f"{field}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise _type_error("model", "a valid string")
    max_tokens = body["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 0:
        raise _type_error("max_tokens", "a valid integer greater than or equal to 0")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _type_error("messages", "a valid list")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _type_error("stream", "a valid boolean")
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _type_error("system", "a valid string or a list of text blocks")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise _type_error("tools", "a valid list")
    has_system = False
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _type_error(f"messages.{i}", "a valid dictionary")
        role = message.get("role")
        if role == "system":
            _check_system_message(message, i)
            has_system = True
            continue
        if role != "user" and role != "assistant":
            raise InvalidRequestError(f"messages.{i}.role: Input should be {_choices(MESSAGE_ROLES)}")
        if message.get("clear_at") is not None:
            raise InvalidRequestError(f'messages.{i}.clear_at: only permitted on role: "system" messages')
        content = message.get("content")
        if isinstance(content, list):
            for j, block in enumerate(content):
                if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                    raise InvalidRequestError(f"messages.{i}.content.{j}: each block needs a string `type`")
        elif not isinstance(content, str):  # (not ``str | list``: that builds a union per message, hundreds a call)
            raise _type_error(f"messages.{i}.content", "a valid string or a list of content blocks")
    if not strict:
        return
    if not messages:
        raise InvalidRequestError("messages: at least one message is required")
    if has_system:
        _check_system_placement(messages)
    check_tool_pairing(messages)
    breakpoints = count_cache_breakpoints(body)
    if breakpoints > MAX_CACHE_BREAKPOINTS:
        raise InvalidRequestError(
            f"A maximum of {MAX_CACHE_BREAKPOINTS} blocks with cache_control may be provided. Found {breakpoints}."
        )


def check_tool_pairing(messages: list[dict[str, Any]]) -> None:
    """Every tool_result answers a tool_use of the previous message, and every tool_use is answered."""
    for i, message in enumerate(messages):
        blocks = content_blocks(message)
        results = [b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"]
        if results:
            previous = content_blocks(messages[i - 1]) if i > 0 else []
            asked = {b.get("id") for b in previous if b.get("type") == "tool_use"}
            unknown = [r for r in results if r not in asked]
            if message.get("role") != "user" or unknown:
                raise InvalidRequestError(
                    f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{', '.join(str(u) for u in unknown) or results[0]}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
        uses = [b.get("id") for b in blocks if b.get("type") == "tool_use"]
        if uses and i + 1 < len(messages):
            answered = {b.get("tool_use_id") for b in content_blocks(messages[i + 1]) if b.get("type") == "tool_result"}
            missing = [u for u in uses if u not in answered]
            if missing:
                raise InvalidRequestError(
                    f"messages.{i + 1}: `tool_use` ids were found without `tool_result` blocks immediately "
                    f"after: {', '.join(str(m) for m in missing)}. Each `tool_use` block must have a "
                    "corresponding `tool_result` block in the next message."
                )
