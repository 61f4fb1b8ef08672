"""Pruning and the prompt-cache planner on a conversation with ``role: "system"`` messages between turns.

Through the gateway to the simulator (which validates as the API does, placement rules included): every request
is valid, every system message reaches the upstream byte-identical and in its place (after the same user
message, before the same answer), and each request's cache reads are what the documented rules predict, by an
oracle written here from the rules alone (prefix order tools -> system -> messages with system messages in
message order; entries written at breakpoints from the model's minimum on; reads looked up at most 20 blocks
back from each breakpoint).
"""

from __future__ import annotations

import hashlib
import itertools
from typing import Any

import httpx
import orjson
import pytest

from clawback.api.messages import strip_cache_control
from clawback.config import PromptCacheSettings, PruningSettings
from clawback.pricing import PriceBook
from clawback.storage.ledger import LedgerReader
from clawback.tokens import prompt_blocks
from tests.conftest import wait_for

MODEL = "claude-sonnet-4-6"
POLICY = " ".join(f"Agency policy clause {i}: viewings need 24 hours notice and photo ID." for i in range(150))
ANSWER = "We can arrange a viewing; bring photo ID and arrive ten minutes early so the agent can brief you. " * 5
TURNS = 14


@pytest.fixture
def gateway_settings(gateway_settings):
    return gateway_settings.model_copy(update={
        "pruning": PruningSettings(enabled=True, trigger_tokens=900, target_tokens=400, keep_recent_turns=2),
        "prompt_cache": PromptCacheSettings(enabled=True),
    })  # fmt: skip


def system_message(turn: int) -> dict[str, Any]:
    return {"role": "system", "content": [{"type": "text", "text": f"Note {turn}: the client now prefers flats."}],
            "output_config": {"effort": "medium"}}  # fmt: skip


def strip_marks(message: dict[str, Any]) -> dict[str, Any]:
    return {**message, "content": [strip_cache_control(b) for b in message["content"]]}


def predicted_reads(bodies: list[dict[str, Any]], min_tokens: int) -> list[int]:
    """The cache read of each request in order, from the documented rules (see the module docstring)."""
    written: set[bytes] = set()
    reads: list[int] = []
    for body in bodies:
        blocks, _ = prompt_blocks(body)
        keys: list[bytes] = []
        cumulative = list(itertools.accumulate(pb.tokens for pb in blocks))
        hasher = hashlib.blake2b(digest_size=16)
        for pb in blocks:
            hasher.update(orjson.dumps([pb.section, pb.role, strip_cache_control(pb.block)]) + pb.message_fields)
            keys.append(hasher.copy().digest())
        points = [i for i, pb in enumerate(blocks) if pb.block.get("cache_control") and cumulative[i] >= min_tokens]
        hits = [next((cumulative[j] for j in range(p, max(p - 20, -1), -1) if keys[j] in written), 0) for p in points]
        reads.append(max(hits, default=0))
        written.update(keys[p] for p in points)
    return reads


def test_system_messages_between_turns_are_kept_in_place_and_cached_as_the_rules_say(
    gateway, gateway_key, gateway_settings, sim_admin
) -> None:
    history: list[dict[str, Any]] = []
    sent: list[list[dict[str, Any]]] = []
    usages = []
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}, timeout=30) as http:
        for turn in range(TURNS):
            history.append({"role": "user", "content": f"Turn {turn}: is the flat on Elm street {turn} free?"})
            if turn % 3 == 1:
                history.append(system_message(turn))
            body = {"model": MODEL, "max_tokens": 20, "system": POLICY, "messages": history}
            response = http.post("/v1/messages", json=body)
            assert response.status_code == 200, response.text  # valid, placement rules included
            usages.append(response.json()["usage"])
            sent.append(list(history))
            history.append({"role": "assistant", "content": f"Answer {turn}: {ANSWER}"})

    received = [orjson.loads(r["body"]) for r in sim_admin.get("/_simulator/received").json()
                if r["path"] == "/v1/messages"]  # fmt: skip
    assert len(received) == TURNS
    with LedgerReader(gateway_settings.ledger.url) as reader:
        rows = wait_for(lambda: (r := reader.rows()) and len(r) == TURNS and r)
    rows.sort(key=lambda r: r.started_at)
    compacted = [i for i, r in enumerate(rows) if r.labels.get("pruning", "").startswith("compacted")]
    assert compacted, [r.labels.get("pruning") for r in rows]  # pruning did drop turns
    assert any(len(b["messages"]) < len(s) for b, s in zip(received, sent, strict=True))

    for original, forwarded in zip(sent, received, strict=True):

        def placed(messages: list[dict[str, Any]]) -> list[tuple[bytes, str, bytes | None]]:
            """Each system message (its bytes, markers aside), the text of the user message before it, and the
            message after it."""
            out = []
            for i, m in enumerate(messages):
                if m["role"] == "system":
                    before = messages[i - 1]["content"]
                    text = before if isinstance(before, str) else before[-1]["text"]
                    after = orjson.dumps(messages[i + 1]) if i + 1 < len(messages) else None
                    out.append((orjson.dumps(strip_marks(m)), text, after))
            return out

        assert placed(forwarded["messages"]) == placed(original)  # byte-identical, in place, none dropped
        # The planner's marker is the one edit, and only as the tail breakpoint of a request ending on one.
        marked = [m for m in forwarded["messages"][:-1] if m["role"] == "system" and m != strip_marks(m)]
        assert not marked

    min_tokens = PriceBook.bundled().get(MODEL).min_cacheable_tokens
    assert [u["cache_read_input_tokens"] for u in usages] == predicted_reads(received, min_tokens)
    # Between compaction points the whole previous prompt is read, also when a system message was appended.
    points = [i for i, r in enumerate(rows) if r.labels.get("pruning") == "compacted-new"]
    assert points and points[0] < TURNS - 1  # requests after a compaction point read what it wrote
    for n in range(1, TURNS):
        if n not in points:
            before, after = usages[n - 1], usages[n]
            assert after["cache_read_input_tokens"] == before["cache_read_input_tokens"] + before[
                "cache_creation_input_tokens"], n  # fmt: skip
