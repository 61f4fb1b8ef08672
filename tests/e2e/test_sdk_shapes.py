"""Conformance with the installed official SDK: every request shape its types allow goes through the gateway.

The shapes come from the SDK's own TypedDicts at test time (``tests/e2e/sdk_shapes.py``): ``MessageParam`` and
``BetaMessageParam`` with every member of every union below them (roles, content blocks, sources, citations,
nested tool-result content, system messages with ``output_config``...) and every optional field. Each is sent
with the SDK through ``clawback serve`` to the simulator, which validates as the API does: it must be accepted,
and the simulator must receive exactly the bytes the SDK sent. When the SDK grows a shape, this test sends it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import anthropic.types as sdk
import anthropic.types.beta as sdk_beta
import orjson
import pytest

from clawback.api.messages import strip_cache_control
from clawback.config import Settings
from clawback.gateway.app import create_gateway_app
from clawback.serving import BackgroundServer
from tests.e2e.sdk_shapes import Shape, _members, _record, _strip, assistant_block_types, request_shapes

MODEL = "claude-opus-5-5"
BATCH = 100  # the simulator keeps the last 200 raw requests


def all_shapes() -> list[Shape]:
    return [
        *request_shapes(sdk.MessageParam, sdk.ContentBlock, beta=False),
        *request_shapes(sdk_beta.BetaMessageParam, sdk_beta.BetaContentBlock, beta=True),
    ]


def _block_types_of(message_param: Any) -> set[str]:
    """The ``type`` of every block a message's ``content`` union admits, read off the SDK."""
    found: set[str] = set()
    for message in _members(message_param):
        record = _record(message)
        assert record is not None
        for member in _members(record[1].get("content")):
            for block in _members(getattr(_strip(member), "__args__", (member,))[0]):
                inner = _record(block)
                if inner is not None and "type" in inner[1]:
                    found.update(getattr(_strip(inner[1]["type"]), "__args__", ()))
    return found


def _sent_types(shapes: list[Shape]) -> set[str]:
    return {b["type"] for s in shapes for m in s.messages if isinstance(m.get("content"), list) for b in m["content"]}


def test_the_walk_covers_every_role_and_block_the_sdk_knows() -> None:
    """The generator skips nothing: every role and every content block type of the SDK's unions is sent."""
    shapes = all_shapes()
    assert len(shapes) > 100
    plain = [s for s in shapes if not s.beta]
    assert {m["role"] for s in plain for m in s.messages} == {"user", "assistant", "system"}
    assert _block_types_of(sdk.MessageParam) <= _sent_types(plain)
    assert _block_types_of(sdk_beta.BetaMessageParam) <= _sent_types([s for s in shapes if s.beta])
    assert "tool_use" in assistant_block_types(sdk.ContentBlock)  # blocks the model writes go to the assistant
    systems = [m for s in shapes for m in s.messages if m["role"] == "system"]
    assert any(isinstance(m.get("content"), str) for m in systems)
    assert any(m.get("output_config") for m in systems)


@pytest.fixture
def sdk_client(gateway: BackgroundServer, gateway_key: str) -> Iterator[tuple[anthropic.Anthropic, list[bytes]]]:
    sent: list[bytes] = []

    def remember(request: Any) -> None:  # (an ``httpx2.Request``: the SDK's own HTTP client)
        if request.url.path == "/v1/messages":
            sent.append(request.content)

    with anthropic.DefaultHttpxClient(event_hooks={"request": [remember]}) as http:
        yield anthropic.Anthropic(base_url=gateway.url, api_key=gateway_key, max_retries=0, http_client=http), sent


def _send(client: anthropic.Anthropic, shape: Shape) -> str | None:
    """``None`` when accepted, else why not."""
    create: Any = client.beta.messages.create if shape.beta else client.messages.create
    try:
        create(model=MODEL, max_tokens=16, messages=shape.messages)
    except anthropic.APIStatusError as exc:
        return f"{shape.label}: {exc.status_code} {exc.message}"
    return None


def test_every_sdk_request_shape_is_accepted_and_forwarded_byte_for_byte(sdk_client, sim_admin) -> None:
    client, sent = sdk_client
    shapes = all_shapes()
    refused: list[str] = []
    altered: list[str] = []
    for start in range(0, len(shapes), BATCH):
        batch = shapes[start : start + BATCH]
        sim_admin.post("/_simulator/reset")
        sent.clear()
        refused.extend(r for r in (_send(client, s) for s in batch) if r is not None)
        received = [r["body"].encode() for r in sim_admin.get("/_simulator/received").json()
                    if r["path"] == "/v1/messages"]  # fmt: skip
        assert len(received) == len(sent) == len(batch)
        altered.extend(s.label for s, a, b in zip(batch, sent, received, strict=True) if a != b)
    assert not refused, f"{len(refused)} of {len(shapes)} SDK request shapes refused:\n" + "\n".join(refused[:40])
    assert not altered, f"{len(altered)} shapes not forwarded byte for byte:\n" + "\n".join(altered[:40])


def _system_messages(messages: list[dict[str, Any]]) -> list[Any]:
    """The system messages, without the markers the prompt-cache planner may add (its one edit)."""
    return [
        {**m, "content": [strip_cache_control(b) for b in m["content"]]} if isinstance(m.get("content"), list) else m
        for m in messages
        if m["role"] == "system"
    ]


def test_every_sdk_request_shape_passes_every_stage(tmp_path, simulator, sim_admin) -> None:
    """With pruning and the prompt-cache planner on, every shape is still accepted, and its system messages
    reach the upstream unchanged but for a planner's ``cache_control`` marker. (The exact cache answers some
    shapes itself; it keys on the whole request: ``tests/unit/test_system_messages.py``.)"""
    settings = Settings(
        upstream={"url": simulator.url}, gateway={"require_key": False},
        pruning={"enabled": True, "trigger_tokens": 50, "target_tokens": 20}, prompt_cache={"enabled": True},
        ledger={"url": f"sqlite:///{tmp_path / 'l.db'}", "journal_path": str(tmp_path / "j")},
    )  # fmt: skip
    shapes = all_shapes()
    refused: list[str] = []
    changed: list[str] = []
    with BackgroundServer(create_gateway_app(settings)) as gateway:
        client = anthropic.Anthropic(base_url=gateway.url, api_key="unused", max_retries=0)
        for start in range(0, len(shapes), BATCH):
            batch = shapes[start : start + BATCH]
            sim_admin.post("/_simulator/reset")
            refused.extend(r for r in (_send(client, s) for s in batch) if r is not None)
            received = [orjson.loads(r["body"]) for r in sim_admin.get("/_simulator/received").json()
                        if r["path"] == "/v1/messages"]  # fmt: skip
            assert len(received) == len(batch)
            changed.extend(
                s.label for s, body in zip(batch, received, strict=True)
                if _system_messages(body["messages"]) != _system_messages(s.messages)
            )  # fmt: skip
    assert not refused, f"{len(refused)} of {len(shapes)} shapes refused:\n" + "\n".join(refused[:40])
    assert not changed, "system messages changed:\n" + "\n".join(changed[:40])
