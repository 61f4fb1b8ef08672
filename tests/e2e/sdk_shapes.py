"""Every request shape the installed ``anthropic`` SDK's types allow, built from the types themselves.

Walks ``MessageParam`` (and ``BetaMessageParam``) at test time with ``typing.get_type_hints`` / ``get_args``:
every member of every union on the way (message roles, content blocks, their sources, citations, nested
tool-result content...) and every optional field is used at least once, in a request that is otherwise
minimal. Nothing is listed by hand, so when the SDK grows a shape (a new role, block or field) the shapes grow
with it and the conformance test sends it (``test_sdk_shapes.py``).

Where the types are looser than the API, a shape is placed where the API takes it, again read off the SDK:
blocks whose ``type`` the model itself produces (the response ``ContentBlock`` union: tool_use, thinking,
server tool results...) go in assistant messages, the other blocks in user messages, text in both; a
``tool_result`` answers a ``tool_use`` of the previous message, and a ``tool_use`` is answered by the next.
"""

from __future__ import annotations

import collections.abc
import os
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin, get_type_hints

import orjson
import pydantic
from typing_extensions import is_typeddict

__all__ = ["Shape", "assistant_block_types", "request_shapes"]

MAX_DEPTH = 7
TOOL_ID = "toolu_01"
_SEQUENCES = (list, collections.abc.Iterable, collections.abc.Sequence, tuple, set)
_MAPPINGS = (dict, collections.abc.Mapping)
_STRINGS = {"id": TOOL_ID, "tool_use_id": TOOL_ID, "data": "aGVsbG8=", "url": "https://example.com/a.pdf"}


@dataclass(frozen=True, slots=True)
class Shape:
    """One request shape: ``label`` says which types it exercises; ``messages`` is the conversation."""

    label: str
    messages: list[dict[str, Any]]
    beta: bool


def _strip(tp: Any) -> Any:
    """``Required[X]``, ``NotRequired[X]``, ``Annotated[X, ...]`` -> ``X``."""
    while True:
        origin = get_origin(tp)
        if origin in (Required, NotRequired):  # (typing_extensions' are these on 3.11)
            tp = get_args(tp)[0]
        elif origin is typing.Annotated:
            tp = tp.__origin__
        else:
            return tp


def _members(tp: Any) -> list[Any]:
    """The members of a (possibly nested, possibly ``X | None``) union, ``None`` left out."""
    tp = _strip(tp)
    if get_origin(tp) in (Union, types.UnionType):
        return [m for arg in get_args(tp) for m in _members(arg)]
    return [] if tp is type(None) else [tp]


def _record(tp: Any) -> tuple[str, dict[str, Any], set[str]] | None:
    """A TypedDict or a pydantic model (the SDK's response blocks, which requests may carry back): its name,
    field types (by the key sent) and required keys."""
    if is_typeddict(tp):  # (``__required_keys__`` cannot see ``Required[...]`` in the SDK's string annotations)
        hints = get_type_hints(tp, include_extras=True)
        marked = {k for k, h in hints.items() if get_origin(h) is Required}
        optional = {k for k, h in hints.items() if get_origin(h) is NotRequired}
        return tp.__name__, hints, marked | (set(hints) - optional if tp.__total__ else set())
    if isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        fields = {(f.alias or name): f.annotation for name, f in tp.model_fields.items()}  # (evaluated already)
        required = {(f.alias or name) for name, f in tp.model_fields.items() if f.is_required()}
        return tp.__name__, fields, required
    return None


def variants(tp: Any, key: str = "", depth: int = 0) -> list[tuple[str, Any]]:
    """``(label, value)`` pairs of type ``tp``: the first is the minimal default; together they use every union
    member and every optional field below ``tp`` at least once (down to ``MAX_DEPTH``)."""
    tp = _strip(tp)
    members = _members(tp)
    if len(members) > 1:
        return [pair for member in members for pair in variants(member, key, depth)]
    if not members:
        return [("None", None)]
    tp = members[0]
    origin = get_origin(tp)
    if origin is Literal:
        return [(repr(get_args(tp)[0]), get_args(tp)[0])]
    if tp is str:
        return [("str", _STRINGS.get(key, "x"))]
    if tp is bool:
        return [("bool", True)]
    if tp is int:
        return [("int", 1)]
    if tp is float:
        return [("float", 1.0)]
    if tp is object or tp is Any:
        return [("object", {})]
    if tp is bytes or origin in (typing.IO, os.PathLike) or tp in (typing.IO, os.PathLike):
        return []  # a file the SDK reads and base64-encodes itself: the string member of the union covers it
    if origin in _SEQUENCES:
        inner = variants(get_args(tp)[0], key, depth + 1) if depth < MAX_DEPTH else []
        return [(f"[{label}]", [value]) for label, value in inner[: 1 if depth >= MAX_DEPTH - 1 else None]] or [
            ("[]", [])
        ]
    if origin in _MAPPINGS or tp in _MAPPINGS:
        return [("{}", {})]
    record = _record(tp)
    if record is None:
        raise TypeError(f"no value for {tp!r} at {key!r}: teach sdk_shapes.variants this type")
    name, fields, required = record
    base = {k: variants(fields[k], k, depth + 1)[0][1] for k in fields if k in required}
    out = [(name, base)]
    if depth >= MAX_DEPTH:
        return out
    for k, field_type in fields.items():
        for label, value in variants(field_type, k, depth + 1)[1 if k in required else 0 :]:
            if value is not None:
                out.append((f"{name}.{k}={label}", {**base, k: value}))
    return out


def assistant_block_types(content_block_union: Any) -> set[str]:
    """The ``type`` of every block the model produces (the SDK's response union): they belong to assistant
    messages."""
    found = set()
    for member in _members(content_block_union):
        record = _record(member)
        if record is not None and "type" in record[1]:
            found.update(get_args(_strip(record[1]["type"])))
    return found


def _block_types(message: dict[str, Any]) -> list[str]:
    content = message.get("content")
    return [b.get("type", "") for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _conversation(message: dict[str, Any], produced: set[str]) -> list[dict[str, Any]] | None:
    """``message`` in a minimal valid conversation, or ``None`` when the API takes its blocks elsewhere."""
    role = message.get("role")
    kinds = _block_types(message)
    hello = {"role": "user", "content": "hi"}
    if role == "system":
        if message.get("content") is None and not message.get("output_config"):
            # The SDK's own docstring: "a message with neither content nor output_config fields is rejected"
            message = {**message, "content": "x"}
        return [hello, message]
    if role == "assistant":
        if any(k not in produced for k in kinds):
            return None  # e.g. a tool_result or an image: a user message carries it (its own shape)
        after = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": TOOL_ID, "content": "ok"}]}]
        return [hello, message, *(after if "tool_use" in kinds else [])]
    if any(k in produced and k != "text" for k in kinds):
        return None  # a block the model produces: an assistant message carries it (its own shape)
    if "tool_result" in kinds:
        ask = {"role": "assistant", "content": [{"type": "tool_use", "id": TOOL_ID, "name": "t", "input": {}}]}
        return [hello, ask, message]
    return [message]


def request_shapes(message_param: Any, content_block: Any, *, beta: bool) -> Iterator[Shape]:
    """Every shape of ``message_param`` (``MessageParam`` or ``BetaMessageParam``) as a valid conversation."""
    produced = assistant_block_types(content_block)
    seen: set[bytes] = set()
    for label, message in variants(message_param):
        conversation = _conversation(message, produced)
        if conversation is None:
            continue
        key = orjson.dumps(conversation)
        if key in seen:
            continue
        seen.add(key)
        yield Shape(label, conversation, beta)
