"""The planner's prediction of cache reads against the simulator's billing, on generated conversations.

Each generated conversation grows request by request (user turns, tool rounds, images, some inside
``tool_result`` blocks, pauses long enough for entries to expire). Every request goes through the real
``PromptCachePlanner`` stage to a terminal that bills the planned body with the simulator's ``PromptCache``.
Before the reply, the planner's belief (``believes_cached``, learnt from earlier replies) is turned into the read
it predicts by the API's read rule (``api.prompt_cache``: the longest prefix within the lookback of a breakpoint);
it must be what the simulator bills. Both sides key prefixes by the one ``api.prompt_cache.prefix_digests``: a rule
the planner applied differently (it used to ignore an image inside a ``tool_result``, which the API counts as
changing the messages level) makes the prediction wrong.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import zlib
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawback.api.prompt_cache import LOOKBACK_POSITIONS, long_enough, new_position, prefix_digests
from clawback.api.usage import Usage
from clawback.config import PromptCacheSettings
from clawback.pipeline.context import Reply, RequestContext
from clawback.pipeline.prompt_cache import PromptCachePlanner
from clawback.pipeline.stage import Pipeline
from clawback.pricing import PriceBook
from clawback.tokens import prompt_blocks
from clawback.upstream.simulator.prompt_cache import PromptCache

BOOK = PriceBook.bundled()
MODEL = "claude-sonnet-4-6"
MINIMUM = BOOK.get(MODEL).min_cacheable_tokens
SYSTEM = "You are the assistant of a property agency. " * 120  # above the model's minimum on its own


def _png(width: int, height: int) -> str:
    header = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\x08\x02\0\0\0"
    )
    return base64.b64encode(header + struct.pack(">I", zlib.crc32(header[12:])) + b"\0" * 16).decode()


def image(width: int) -> dict[str, Any]:
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _png(width, 300)}}


text = st.text(alphabet="abcdefghij klmnop 0123456789.", min_size=1, max_size=300).filter(lambda t: t.strip() != "")
steps = st.lists(
    st.tuples(
        st.sampled_from(["user", "tool", "tool_image", "user_image", "tools_burst"]),
        text,
        st.sampled_from([1.0, 5.0, 30.0, 200.0, 400.0, 4000.0]),  # seconds before the next request
    ),
    min_size=2,
    max_size=14,
)


def conversation(plan: list[tuple[str, str, float]]) -> list[tuple[list[dict[str, Any]], float]]:
    """The messages of each request (each one ends with a user message) and the pause after it."""
    messages: list[dict[str, Any]] = []
    out: list[tuple[list[dict[str, Any]], float]] = []
    ids = iter(range(10_000))
    for n, (kind, words, pause) in enumerate(plan):
        if n:
            messages.append({"role": "assistant", "content": f"Noted: {words}"})
        if kind in ("tool", "tool_image", "tools_burst"):
            messages.append({"role": "user", "content": f"Please look this up: {words}"})
            for _ in range(12 if kind == "tools_burst" else 1):  # a long loop: beyond the 20-position lookback
                call = f"toolu_{next(ids)}"
                messages.append({"role": "assistant", "content": [
                    {"type": "tool_use", "id": call, "name": "search", "input": {"q": words}}]})  # fmt: skip
                result: list[dict[str, Any]] = [{"type": "text", "text": f"found {words} " * 5}]
                if kind == "tool_image":
                    result.append(image(200 + 10 * n))
                messages.append({"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": call, "content": result}]})  # fmt: skip
            messages.append({"role": "assistant", "content": "Here is what I found."})
        content: Any = words
        if kind == "user_image":
            content = [image(300 + n), {"type": "text", "text": words}]
        messages.append({"role": "user", "content": content})
        out.append(([dict(m) for m in messages], pause))
    return out


def predicted_read(planner: PromptCachePlanner, body: dict[str, Any]) -> int:
    """The read the planner's beliefs imply for ``body`` as planned: the API's rule over what it thinks is cached."""
    blocks, _ = prompt_blocks(body)
    digests = prefix_digests(body, blocks)
    cumulative, running = [], 0
    for pb in blocks:
        running += pb.tokens
        cumulative.append(running)
    best = 0
    for point in (i for i, pb in enumerate(blocks) if pb.block.get("cache_control")):
        if not long_enough(cumulative[point], MINIMUM):
            continue
        positions = 1
        for i in range(point, -1, -1):
            if i < point and new_position(blocks, i):
                positions += 1
                if positions > LOOKBACK_POSITIONS:
                    break
            if planner.believes_cached("anonymous", MODEL, digests[i]):
                best = max(best, cumulative[i])
                break
    return best


def replay(plan: list[tuple[str, str, float]]) -> list[tuple[int, int]]:
    """(predicted, billed) cache-read tokens of each request of the conversation ``plan`` describes."""
    now = [1_000.0]

    def clock() -> float:
        return now[0]

    planner = PromptCachePlanner(PromptCacheSettings(fanout=False), BOOK, clock=clock)
    simulator = PromptCache(clock=clock)
    seen: list[tuple[int, int]] = []

    async def bill(ctx: RequestContext) -> Reply:
        predicted = predicted_read(planner, ctx.body)
        account = simulator.account("workspace", ctx.body, min_cacheable_tokens=MINIMUM)
        simulator.activate(account)
        seen.append((predicted, account.usage.cache_read_input_tokens))
        usage = Usage(account.usage.input_tokens, 20, account.usage.cache_read_input_tokens,
                      account.usage.cache_write_5m_input_tokens, account.usage.cache_write_1h_input_tokens)  # fmt: skip
        return Reply(status=200, headers=[], body=b"{}", usage=usage)

    pipeline = Pipeline([planner], bill)
    for messages, pause in conversation(plan):
        body = {"model": MODEL, "max_tokens": 100, "system": SYSTEM, "messages": messages}
        ctx = RequestContext(request_id="r", endpoint="messages", body=body, raw_body=orjson.dumps(body))
        asyncio.run(pipeline(ctx))
        now[0] += pause
    return seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_the_planner_predicts_the_reads_the_simulator_bills(plan: list[tuple[str, str, float]]) -> None:
    seen = replay(plan)
    assert all(predicted == billed for predicted, billed in seen), seen


def test_the_prediction_holds_across_images_in_tool_results_and_long_tool_loops() -> None:
    """One conversation that reads: an image appears inside a tool_result (the messages level changes: the
    history is written again), a burst of tool rounds goes past the lookback (the planner bridges it)."""
    plan = [("user", "hello", 5.0), ("tool", "prices", 5.0), ("tool_image", "floor plan", 5.0),
            ("user", "thanks", 5.0), ("tools_burst", "listings", 5.0), ("user", "and now?", 5.0)]  # fmt: skip
    seen = replay(plan)
    assert all(predicted == billed for predicted, billed in seen), seen
    billed = [b for _, b in seen]
    assert billed[0] == 0 and all(b > 0 for b in billed[1:]), billed  # every later request reads
