"""Summaries shared between gateway replicas through real Redis (``pruning.summary_store: redis``).

Two pruning stages stand for two replicas behind a load balancer; a conversation's turns alternate between
them. With the shared store the cheap model is asked once per compaction point in all, and both replicas send
byte-identical pruned prompts (so the prompt cache keeps hitting whichever replica serves the next turn).
"""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest

from clawback.pipeline import Pipeline, Reply, RequestContext
from clawback.pipeline.pruning import PruningStage
from clawback.storage.summary_store import MemorySummaryStore, RedisSummaryStore
from tests.conftest import redis_up
from tests.unit.test_pruning import BOOK, body, policy

REDIS_URL = "redis://127.0.0.1:6379/0"


def replica(store: RedisSummaryStore | MemorySummaryStore, asked: list[str]) -> Pipeline:
    settings = policy(fact_memory="summary")

    async def terminal(ctx: RequestContext) -> Reply:
        if ctx.tenant.labels.get("pruning") == "summary":
            asked.append(ctx.request_id)
            answer = {"content": [{"type": "text", "text": f"- budget $437,500 (summary {len(asked)})"}]}
            return Reply(status=200, headers=[], body=orjson.dumps(answer))
        return Reply(status=200, headers=[], body=b"{}")

    stage = PruningStage(settings, BOOK, store=store)
    return Pipeline([stage], terminal)  # binds the summarizer to it


async def conversation_through(replicas: list[Pipeline]) -> list[tuple[str | None, bytes]]:
    """Turns 20..29 of one conversation, turn N on replica N % len(replicas): (boundary, pruned body)."""
    sent: list[tuple[str | None, bytes]] = []
    for turns in range(20, 30):
        ctx = RequestContext(request_id=f"t{turns}", endpoint="messages", body=body(turns), raw_body=None)
        await replicas[turns % len(replicas)](ctx)
        sent.append((ctx.tenant.labels.get("pruning_boundary_turn"), orjson.dumps(ctx.body)))
    return sent


def test_replicas_share_summaries_through_redis() -> None:
    if not redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    prefix = f"cbtest:sum:{uuid.uuid4().hex[:8]}:"
    asked: list[str] = []

    async def main() -> list[tuple[str | None, bytes]]:
        one, two = RedisSummaryStore(REDIS_URL, prefix=prefix), RedisSummaryStore(REDIS_URL, prefix=prefix)
        try:
            return await conversation_through([replica(one, asked), replica(two, asked)])
        finally:
            keys = [key async for key in one.redis.scan_iter(match=f"{prefix}*")]
            if keys:
                await one.redis.delete(*keys)
            await one.aclose()
            await two.aclose()

    sent = asyncio.run(main())
    points = {boundary for boundary, _ in sent if boundary is not None}
    assert len(points) >= 2
    assert len(asked) == len(points)  # once per compaction point across both replicas, never per replica
    for boundary in points:  # every turn of a compaction point carries the same memory, whichever replica sent it
        memories = {raw.split(b"</conversation-memory>")[0] for b, raw in sent if b == boundary}
        assert len(memories) == 1 and b"summary" in next(iter(memories))


def test_in_process_stores_ask_again_on_each_replica() -> None:
    """The reason for the Redis store: with per-process stores the second replica pays for its own summary
    and sends a different memory, so the prompt prefix (and the prompt cache) breaks on every replica switch."""
    asked: list[str] = []
    sent = asyncio.run(
        conversation_through([replica(MemorySummaryStore(), asked), replica(MemorySummaryStore(), asked)])
    )
    points = {boundary for boundary, _ in sent if boundary is not None}
    assert len(asked) > len(points)


def test_redis_down_means_computed_here_not_an_error() -> None:
    asked: list[str] = []
    down = RedisSummaryStore("redis://127.0.0.1:1/0", prefix="cbtest:down:", timeout_s=0.05)

    async def main() -> list[tuple[str | None, bytes]]:
        try:
            return await conversation_through([replica(down, asked)])
        finally:
            await down.aclose()

    sent = asyncio.run(main())
    points = {boundary for boundary, _ in sent if boundary is not None}
    assert len(asked) == len(points)  # still once per point: the local store in front of Redis keeps them
    assert down.circuit.errors >= 1 and all(b"conversation-memory" in raw for b, raw in sent if b is not None)
