"""Property tests: no pruning strategy ever emits a conversation the API would reject.

Histories are generated with tool use (parallel calls, large and image tool results, errors), thinking and
redacted thinking blocks, images, unknown block types and client cache_control markers (on tool results too),
and end either on a new user message or inside a tool loop, now and then a long one (an agent's round trips,
whose older outputs the pruner elides). Every strategy is run with tiny thresholds so that it compacts.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawback.api.errors import InvalidRequestError
from clawback.api.messages import count_cache_breakpoints, validate_messages_request
from clawback.bench.pruning_eval import above_planner, strategy_policies
from clawback.config import PruningSettings
from clawback.pipeline.pruning.stage import PruningStage
from clawback.pricing import PriceBook
from tests.unit.test_pruning import with_planner

BOOK = PriceBook.bundled()
SMALL = PruningSettings(
    trigger_tokens=60, target_tokens=20, keep_recent_turns=1, tool_elision_min_tokens=8, tool_loop_trigger_tokens=20
)
POLICIES = {name: policy for name, policy in strategy_policies(SMALL).items()}
PLACEHOLDER = "[clawback: earlier tool output elided"


def _png(width: int, height: int) -> str:
    header = (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", width, height) + b"\x08\x02\0\0\0"
    )
    return base64.b64encode(header + struct.pack(">I", zlib.crc32(header[12:])) + b"\0" * 16).decode()


IMAGE = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": _png(64, 48)}}
words = st.text(alphabet="abcdefghij klmnop $0123456789.", min_size=1, max_size=80).filter(lambda t: t.strip() != "")


@st.composite
def histories(draw: st.DrawFn, agent: bool = False) -> dict[str, Any]:
    """A valid request; ``agent``: one that ends inside a long tool loop (an agent's round trips)."""
    ids = iter(range(10_000))
    thinking_on = draw(st.booleans())
    messages: list[dict[str, Any]] = []
    markers = draw(st.integers(0, 3))

    def user_blocks() -> list[dict[str, Any]] | str:
        nonlocal markers
        if draw(st.booleans()):
            return draw(words)
        blocks: list[dict[str, Any]] = [{"type": "text", "text": draw(words)}]
        if draw(st.integers(0, 5)) == 0:
            blocks.append(IMAGE)
        if draw(st.integers(0, 6)) == 0:
            blocks.append({"type": "future_widget_20991231", "payload": {"x": draw(st.integers(-(2**53), 2**53))}})
        if markers and draw(st.booleans()):
            markers -= 1
            blocks[0] = {**blocks[0], "cache_control": {"type": "ephemeral"}}
        return blocks

    def assistant(tool_calls: int, final: bool) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if thinking_on:
            if draw(st.integers(0, 4)) == 0:
                content.append({"type": "redacted_thinking", "data": "EnC0ZGVk"})
            else:
                content.append({"type": "thinking", "thinking": draw(words), "signature": "sig"})
        if draw(st.booleans()) or final:
            content.append({"type": "text", "text": draw(words)})
        if draw(st.integers(0, 8)) == 0:
            content.append({"type": "mystery_block", "v": 1})
        for _ in range(tool_calls):
            content.append(
                {"type": "tool_use", "id": f"toolu_{next(ids)}", "name": "lookup", "input": {"q": draw(words)}}
            )
        return {"role": "assistant", "content": content}

    def results(previous: dict[str, Any]) -> dict[str, Any]:
        nonlocal markers
        blocks: list[dict[str, Any]] = []
        for block in previous["content"]:
            if block["type"] == "tool_use":
                payload: Any = draw(words) * draw(st.integers(1, 30))
                if draw(st.integers(0, 2)) == 0:  # a large output: a file read, a test run
                    payload = (payload + "\n") * draw(st.integers(10, 60))
                if draw(st.integers(0, 5)) == 0:
                    payload = [{"type": "text", "text": payload}, IMAGE]
                result = {"type": "tool_result", "tool_use_id": block["id"], "content": payload}
                if draw(st.integers(0, 6)) == 0:
                    result["is_error"] = True
                if markers and draw(st.integers(0, 5)) == 0:
                    markers -= 1
                    result["cache_control"] = {"type": "ephemeral"}
                blocks.append(result)
        return {"role": "user", "content": blocks}

    turns = draw(st.integers(2, 14))
    for turn in range(turns):
        messages.append({"role": "user", "content": user_blocks()})
        last = turn == turns - 1
        if last and not agent and draw(st.booleans()):
            break  # the request ends on the new user message
        loops = draw(st.integers(0, 2)) if draw(st.integers(0, 3)) else draw(st.integers(3, 14))  # an agent's loop
        if last and agent:
            loops = draw(st.integers(4, 16))
        for loop in range(loops):
            call = assistant(draw(st.integers(1, 3)), final=False)
            messages.append(call)
            messages.append(results(call))
            if last and loop == loops - 1:
                break
        else:
            if not last:
                messages.append(assistant(0, final=True))
            continue
        if last:
            break
        messages.append(assistant(0, final=True))
    if messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": draw(words)})
    body: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 256, "messages": messages}
    if thinking_on:
        body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        body["max_tokens"] = 2048
    if draw(st.booleans()):
        body["system"] = [{"type": "text", "text": "You help.", "cache_control": {"type": "ephemeral"}}]
    if draw(st.integers(0, 4)) == 0:
        body["output_config"] = {"effort": "low"}
    return body


def _current_turn_start(messages: list[dict[str, Any]]) -> int:
    from clawback.pipeline.pruning.conversation import is_turn_start

    return max(i for i, m in enumerate(messages) if i == 0 or is_turn_start(m))


def _loop_policy(strategy: str, keep: int | None, per_tool: bool) -> PruningSettings:
    return POLICIES[strategy].model_copy(update={"keep_recent_tool_results": keep, "keep_latest_per_tool": per_tool})


def _is_results(message: dict[str, Any]) -> bool:
    content = message["content"]
    return isinstance(content, list) and any(b["type"] == "tool_result" for b in content)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=histories(),
    strategy=st.sampled_from(sorted(POLICIES)),
    planner=st.booleans(),
    keep=st.sampled_from([1, 2, 3, None]),
    per_tool=st.booleans(),
)
def test_no_strategy_emits_an_invalid_conversation(
    body: dict[str, Any], strategy: str, planner: bool, keep: int | None, per_tool: bool
) -> None:
    validate_messages_request(body, strict=True)  # the generator makes valid histories
    policy = _loop_policy(strategy, keep, per_tool)
    stage = with_planner(PruningStage(policy, BOOK), planner)
    before = orjson.dumps(body)
    outcome = stage.prune_body(body, policy)
    pruned = outcome.body
    assert orjson.dumps(body) == before, "the caller's request is never mutated"
    validate_messages_request(pruned, strict=True)
    assert outcome.decision != "skipped:pruning_bug"
    assert count_cache_breakpoints(pruned) <= count_cache_breakpoints(body)
    # every field but messages passes through untouched
    assert {k: v for k, v in pruned.items() if k != "messages"} == {k: v for k, v in body.items() if k != "messages"}
    messages, original = pruned["messages"], body["messages"]
    assert messages[0]["role"] == original[0]["role"]
    # the turn in progress keeps every message and block (thinking blocks the API requires, tool_use, ids, markers);
    # only the content of older tool results may become the elision placeholder, never the newest ones
    tail = original[_current_turn_start(original) :]
    mine = messages[len(messages) - len(tail) :]
    assert len(mine) == len(tail)
    for got, sent in zip(mine[1:], tail[1:], strict=True):
        assert got["role"] == sent["role"]
        if got == sent:
            continue
        assert sent["role"] == "user" and _is_results(sent) and len(got["content"]) == len(sent["content"])
        for a, b in zip(got["content"], sent["content"], strict=True):
            if a != b:
                assert b["type"] == "tool_result" and {**a, "content": b["content"]} == b
                assert a["content"].startswith(PLACEHOLDER)
    current = [b for m in tail[1:] if _is_results(m) for b in m["content"] if b["type"] == "tool_result"]
    kept = [b for m in mine[1:] if _is_results(m) for b in m["content"] if b["type"] == "tool_result"]
    newest = keep or 0
    assert kept[len(kept) - newest :] == current[len(current) - newest :]
    steps = [i for i, m in enumerate(tail) if i and _is_results(m)]
    if steps:
        assert mine[steps[-1]] == tail[steps[-1]]  # the results the model is answering now
    if keep is None or strategy not in ("tool_elision", "all"):
        assert mine[1:] == tail[1:]

    # every kept message carries its thinking, tool_use, image and unknown blocks exactly as sent (only text may
    # be added in front, and only tool_result contents may be elided)
    def untouchable(message: dict[str, Any]) -> tuple[str, bytes]:
        content = message["content"] if isinstance(message["content"], list) else []
        kept = [b if b["type"] != "tool_result" else {"tool_use_id": b["tool_use_id"]} for b in content]
        return message["role"], orjson.dumps([b for b in kept if b.get("type") != "text"])

    originals = {untouchable(m) for m in original}
    assert all(untouchable(m) in originals for m in messages)
    # deterministic: the same history gives byte-identical output
    assert orjson.dumps(stage.prune_body(body, policy).body) == orjson.dumps(pruned)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=histories(), strategy=st.sampled_from(sorted(POLICIES)), per_tool=st.booleans())
def test_the_next_turn_keeps_the_pruned_prefix_until_the_next_compaction_point(
    body: dict[str, Any], strategy: str, per_tool: bool
) -> None:
    policy = _loop_policy(strategy, 1, per_tool)
    stage = above_planner(PruningStage(policy, BOOK), BOOK)
    first = stage.prune_body(body, policy)
    grown = {
        **body,
        "messages": [*body["messages"], {"role": "assistant", "content": "ok"}, {"role": "user", "content": "next"}],
    }
    second = stage.prune_body(grown, policy)
    if second.plan is not None and second.plan.new_compaction:
        return  # a compaction point: the prefix is allowed to change here, once
    assert first.plan is None or second.plan is not None
    old = orjson.dumps(first.body["messages"])[:-1]
    assert orjson.dumps(second.body["messages"]).startswith(old)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=histories(agent=True),
    strategy=st.sampled_from(["tool_elision", "all"]),
    cached=st.booleans(),
    keep=st.sampled_from([1, 2, 3]),
    per_tool=st.booleans(),
    planner=st.booleans(),
)
def test_each_round_trip_of_a_tool_loop_keeps_the_previous_ones_pruned_prefix_until_a_compaction_point(
    body: dict[str, Any], strategy: str, cached: bool, keep: int, per_tool: bool, planner: bool
) -> None:
    """Replay the request's turn in progress round trip by round trip, as the agent sent it (priced the same way
    throughout: a client whose requests turn cached midway has no cached prefix to keep before that). With the
    planner, the prefix up to the frontier a request names survives the next request, compaction point or not:
    the planner's breakpoint there is what that compaction reads."""
    policy = _loop_policy(strategy, keep, per_tool).model_copy(update={"assume_prompt_cache": cached})
    stage = with_planner(PruningStage(policy, BOOK), planner)
    messages = body["messages"]
    ends = [i + 1 for i in range(_current_turn_start(messages) + 1, len(messages)) if _is_results(messages[i])]
    previous: list[Any] | None = None
    frontier: int | None = None
    for end in ends:
        request = {**body, "messages": messages[:end]}
        outcome = stage.prune_body(request, policy)
        validate_messages_request(outcome.body, strict=True)
        sent = outcome.body["messages"]
        assert sent[-1] == messages[end - 1]  # the newest tool results, as they came
        if previous is not None and outcome.decision != "compacted-new":
            assert orjson.dumps(sent[: len(previous)]) == orjson.dumps(previous)
        if previous is not None and frontier is not None:
            assert orjson.dumps(sent[: frontier + 1]) == orjson.dumps(previous[: frontier + 1])
        if planner and cached:
            assert outcome.cache_frontier is not None and outcome.cache_frontier < len(sent) - 1
            assert sent[outcome.cache_frontier] is not None
        else:
            assert outcome.cache_frontier is None
        previous, frontier = sent, outcome.cache_frontier


@st.composite
def corrupted(draw: st.DrawFn) -> dict[str, Any]:
    """A generated history with one defect the strict checks catch (or, now and then, a harmless change)."""
    body = orjson.loads(orjson.dumps(draw(histories())))
    messages = body["messages"]
    index = draw(st.integers(0, len(messages) - 1))
    message = messages[index]
    blocks = [b for b in message["content"] if isinstance(b, dict)] if isinstance(message["content"], list) else []
    tools = [b for b in blocks if b["type"] in ("tool_use", "tool_result")]
    kind = draw(st.sampled_from(["drop_block", "rename_id", "role", "markers", "odd_id", "none"]))
    if kind == "drop_block" and tools:
        message["content"] = [b for b in message["content"] if b is not draw(st.sampled_from(tools))] or "x"
    elif kind == "rename_id" and tools:
        block = draw(st.sampled_from(tools))
        block["id" if block["type"] == "tool_use" else "tool_use_id"] = "toolu_elsewhere"
    elif kind == "role":
        message["role"] = "assistant" if message["role"] == "user" else "user"
    elif kind == "markers":
        for m in messages:
            if isinstance(m["content"], list) and draw(st.booleans()):
                m["content"][0]["cache_control"] = {"type": "ephemeral"}
    elif kind == "odd_id" and tools:
        block = draw(st.sampled_from(tools))
        block["id" if block["type"] == "tool_use" else "tool_use_id"] = 7
    return body


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(body=corrupted(), strategy=st.sampled_from(sorted(POLICIES)), planner=st.booleans())
def test_an_invalid_original_goes_out_untouched_whatever_turns_pruning_drops(
    body: dict[str, Any], strategy: str, planner: bool
) -> None:
    """The stage validates the original whole only when the pruned form does not vouch for it: the decision
    must be the one a full validation of the original gives."""
    policy = POLICIES[strategy]
    stage = with_planner(PruningStage(policy, BOOK), planner)
    try:
        validate_messages_request(body, strict=True)
        valid = True
    except InvalidRequestError:
        valid = False
    except TypeError:
        return  # an id the validator itself cannot hash: not a request pruning gets to see
    outcome = stage.prune_body(body, policy)
    if not valid:
        assert outcome.body is body
        assert outcome.decision in ("none", "skipped:invalid_request")
    else:
        assert outcome.decision != "skipped:invalid_request"
        validate_messages_request(outcome.body, strict=True)
