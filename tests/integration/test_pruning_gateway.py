"""Pruning through the gateway against the simulator, which validates every request as strictly as the API."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from clawback.config import PromptCacheSettings, PruningSettings
from clawback.storage.ledger import LedgerReader
from clawback.tokens import prompt_blocks
from tests.conftest import wait_for

MODEL = "claude-sonnet-4-6"


@pytest.fixture
def pruning() -> PruningSettings:
    return PruningSettings(enabled=True, trigger_tokens=400, target_tokens=150)


@pytest.fixture
def prompt_cache() -> PromptCacheSettings:
    return PromptCacheSettings(enabled=False)  # as in tests/conftest.py: the planner off unless a test asks


@pytest.fixture
def gateway_settings(gateway_settings, pruning, prompt_cache):
    return gateway_settings.model_copy(update={"pruning": pruning, "prompt_cache": prompt_cache})


@pytest.fixture
def http(gateway, gateway_key):
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}, timeout=30) as client:
        yield client


def received(sim_admin) -> list[dict[str, Any]]:
    rows = sim_admin.get("/_simulator/received").json()
    return [orjson.loads(r["body"]) for r in rows if r["path"] == "/v1/messages"]


def turn(history: list[dict[str, Any]], n: int) -> None:
    """One human turn with a tool call and a large tool result, then the answer."""
    history.append(
        {"role": "user", "content": f"Turn {n}: we need {n + 2} bedrooms near Riverside, budget ${400 + n},000."}
    )
    history.append({"role": "assistant", "content": [
        {"type": "text", "text": "Let me check the listings."},
        {"type": "tool_use", "id": f"toolu_{n:04d}", "name": "search_listings", "input": {"beds": n + 2}},
    ]})  # fmt: skip
    history.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": f"toolu_{n:04d}", "content": f"BW-{n} 3 bed Riverside. " * 60},
    ]})  # fmt: skip
    history.append({"role": "assistant", "content": "Here is what I found for you. " * 8})


def test_a_long_conversation_is_pruned_validly_and_recorded(http, sim_admin, gateway_settings) -> None:
    history: list[dict[str, Any]] = []
    for n in range(16):
        turn(history, n)
        body = {"model": MODEL, "max_tokens": 20, "messages": [*history, {"role": "user", "content": "Any news?"}]}
        response = http.post("/v1/messages", json=body)
        assert response.status_code == 200, response.text  # the simulator rejects any invalid request
    bodies = received(sim_admin)
    assert len(bodies) == 16
    assert len(bodies[-1]["messages"]) < len(history) + 1
    assert "budget $400,000" in orjson.dumps(bodies[-1]).decode()  # a fact from the first turns survives
    full = [*history, {"role": "user", "content": "Any news?"}]
    assert http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": full}).status_code == 200
    counted = [r for r in sim_admin.get("/_simulator/received").json() if r["path"].endswith("count_tokens")]
    assert orjson.loads(counted[-1]["body"])["messages"] == full  # count_tokens is never pruned

    def rows():
        with LedgerReader(gateway_settings.ledger.url) as reader:
            found = [r for r in reader.rows() if r.endpoint == "messages"]
        return found if len(found) == 16 else None

    records = wait_for(rows)
    pruned = [r for r in records if r.labels.get("pruning", "").startswith("compacted")]
    assert pruned, [r.labels for r in records]
    assert all("pruning" in r.savings_micro_usd for r in pruned)
    assert all(r.counterfactual_micro_usd == r.cost_micro_usd + sum(r.savings_micro_usd.values()) for r in records)
    assert any(int(r.labels["pruning_tokens_after"]) < int(r.labels["pruning_tokens_before"]) / 2 for r in pruned)


@pytest.mark.parametrize("pruning", [PruningSettings(enabled=True, trigger_tokens=400, target_tokens=150,
                                                     fact_memory="summary")])  # fmt: skip
def test_the_summarizer_goes_through_the_pipeline_and_is_booked(http, sim_admin, gateway_settings) -> None:
    history: list[dict[str, Any]] = []
    for n in range(10):
        turn(history, n)
        body = {"model": MODEL, "max_tokens": 20, "messages": [*history, {"role": "user", "content": "Any news?"}]}
        assert http.post("/v1/messages", json=body).status_code == 200
    bodies = received(sim_admin)
    summaries = [b for b in bodies if b["model"] == "claude-haiku-4-5"]
    main = [b for b in bodies if b["model"] == MODEL]
    assert len(main) == 10 and 1 <= len(summaries) < 10  # once per compaction point, not per turn
    assert "conversation-memory" in orjson.dumps(main[-1]).decode()

    def rows():
        with LedgerReader(gateway_settings.ledger.url) as reader:
            found = reader.rows()
        return found if len(found) == len(bodies) else None

    records = wait_for(rows)
    booked = [r for r in records if r.model == "claude-haiku-4-5"]
    assert len(booked) == len(summaries) and all(r.cost_micro_usd > 0 for r in booked)
    assert all(r.labels.get("pruning") == "summary" for r in booked)


def read_round_trip(history: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """Append round trip ``n`` (a Read call and its 120-line output) to ``history``; return the messages as a coding
    agent sends them, with its one moving breakpoint on the newest block."""
    history.append({"role": "assistant", "content": [
        {"type": "text", "text": "Let me read the next module."},
        {"type": "tool_use", "id": f"toolu_{n:04d}", "name": "Read", "input": {"file_path": f"/repo/m{n}.py"}},
    ]})  # fmt: skip
    source = "\n".join(f"{i:6d}\tdef score_{n}_{i}(lead): return lead.get('budget', 0) > {i}" for i in range(120))
    history.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": f"toolu_{n:04d}", "content": source},
    ]})  # fmt: skip
    messages = [{**m} for m in history]
    messages[-1] = {"role": "user", "content": [{**history[-1]["content"][0], "cache_control": {"type": "ephemeral"}}]}
    return messages


@pytest.mark.parametrize("pruning", [PruningSettings(enabled=True)])
def test_an_agent_tool_loop_is_elided_validly_and_recorded(http, sim_admin, gateway_settings) -> None:
    """One human instruction, then round trips with large tool outputs, sent as a coding agent sends them."""
    history: list[dict[str, Any]] = [{"role": "user", "content": "The scoring test fails; find out why and fix it."}]
    steps = 18
    for n in range(steps):
        messages = read_round_trip(history, n)
        body = {"model": MODEL, "max_tokens": 20, "messages": messages}
        response = http.post("/v1/messages", json=body)
        assert response.status_code == 200, response.text  # the simulator rejects any invalid request
    bodies = received(sim_admin)
    assert len(bodies) == steps
    last = bodies[-1]["messages"]
    assert len(last) == len(history)
    outputs = [m["content"][0] for m in last[2::2]]
    elided = [r for r in outputs if r["content"].startswith("[clawback: earlier tool output elided")]
    assert len(elided) >= steps // 2
    assert outputs[-1]["content"] == history[-1]["content"][0]["content"]  # the result being answered
    assert outputs[-1]["cache_control"] == {"type": "ephemeral"}

    def rows():
        with LedgerReader(gateway_settings.ledger.url) as reader:
            found = [r for r in reader.rows() if r.endpoint == "messages"]
        return found if len(found) == steps else None

    records = wait_for(rows)
    labels = [r.labels for r in sorted(records, key=lambda r: r.labels.get("pruning_tokens_before", "0").zfill(9))]
    assert any(label.get("pruning") == "compacted-new" for label in labels)
    assert int(labels[-1]["pruning_elided_steps"]) >= steps // 2
    assert all(r.counterfactual_micro_usd == r.cost_micro_usd + sum(r.savings_micro_usd.values()) for r in records)
    assert sum(r.cost_micro_usd for r in records) < sum(r.counterfactual_micro_usd for r in records)


def marked_messages(body: dict[str, Any]) -> list[int]:
    """The message of each breakpoint in ``body``, in prompt order (-1: in the tools or the system prompt)."""
    marked = [pb for pb in prompt_blocks(body)[0] if pb.block.get("cache_control")]
    return [int(pb.path.split(".")[1]) if pb.section == "messages" else -1 for pb in marked]


def prefix_tokens(body: dict[str, Any], message: int) -> int:
    """Tokens of ``body``'s prompt up to the end of ``messages[message]``, as the simulator bills them."""
    blocks, _ = prompt_blocks(body)
    end = max(i for i, pb in enumerate(blocks) if pb.path.startswith(f"messages.{message}."))
    return sum(pb.tokens for pb in blocks[: end + 1])


def unmarked(messages: list[dict[str, Any]]) -> list[Any]:
    """``messages`` as the cache keys them: no markers, a string content as its one text block."""

    def blocks(content: Any) -> list[Any]:
        if isinstance(content, str):
            return [{"type": "text", "text": content}]
        return [{k: v for k, v in block.items() if k != "cache_control"} for block in content]

    return [{**m, "content": blocks(m["content"])} for m in messages]


@pytest.mark.parametrize("pruning", [PruningSettings(enabled=True)])
@pytest.mark.parametrize("prompt_cache", [PromptCacheSettings(enabled=True), PromptCacheSettings(enabled=False)],
                         ids=["planner", "no-planner"])  # fmt: skip
def test_with_the_planner_a_tool_loop_compaction_reads_the_frontier_prefix(
    http, sim_admin, gateway_settings, prompt_cache
) -> None:
    """A coding agent's tool loop (its one moving breakpoint on the newest block) through pruning: with the
    planner on, every compaction point reads the prefix up to the previous request's frontier breakpoint from
    the cache and rewrites only what follows it; without it, a compaction point reads nothing."""
    planner = prompt_cache.enabled
    rule = "Rule {}: read the code before editing it, keep changes minimal and run the tests after each edit."
    system = " ".join(rule.format(i) for i in range(35))  # below Sonnet's 1,024-token minimum on its own...
    trace = 'Trace line {}: File "/repo/scoring.py", line {}, in score_lead; AssertionError: expected tier A.'
    task = "The scoring test fails; find out why and fix it. " + " ".join(trace.format(i, 7 * i) for i in range(12))
    history: list[dict[str, Any]] = [{"role": "user", "content": task}]  # ...and cacheable with the task
    steps = 30
    usage: list[dict[str, int]] = []
    for n in range(steps):
        messages = read_round_trip(history, n)
        body = {"model": MODEL, "max_tokens": 20, "system": system, "messages": messages}
        response = http.post("/v1/messages", json=body)
        assert response.status_code == 200, response.text  # the simulator rejects any invalid request
        usage.append(response.json()["usage"])
    bodies = received(sim_admin)
    assert len(bodies) == steps
    elided = [
        sum(m["content"][0]["content"].startswith("[clawback: earlier tool output elided") for m in b["messages"][2::2])
        for b in bodies
    ]
    points = [r for r in range(1, steps) if elided[r] > elided[r - 1]]  # the requests reaching a compaction point
    assert len(points) >= 4, elided
    marks = [marked_messages(b) for b in bodies]
    assert all(len(m) <= 4 for m in marks), marks
    assert all(m[-1] == len(b["messages"]) - 1 for m, b in zip(marks, bodies, strict=True))  # the client's, kept
    if planner:
        # the frontier: a breakpoint on an earlier message, on every request (system + task pass the minimum)
        assert all(any(0 <= i < m[-1] for i in m) for m in marks), marks
        for r in points:
            frontier = max(i for i in marks[r - 1] if 0 <= i < marks[r - 1][-1])
            kept = slice(0, frontier + 1)
            assert unmarked(bodies[r]["messages"][kept]) == unmarked(bodies[r - 1]["messages"][kept])
            # the compaction reads exactly the previous frontier's prefix and writes only what follows it
            assert usage[r]["cache_read_input_tokens"] == prefix_tokens(bodies[r], frontier) > 0, (r, usage[r])
    else:
        assert all(m == [len(b["messages"]) - 1] for m, b in zip(marks, bodies, strict=True)), marks
        # the one moving breakpoint looks back 20 positions: a compaction point rewrites the whole history
        assert all(usage[r]["cache_read_input_tokens"] == 0 for r in points), [usage[r] for r in points]
    assert all(usage[r]["cache_read_input_tokens"] > 0 for r in range(1, steps) if r not in points)

    def rows():
        with LedgerReader(gateway_settings.ledger.url) as reader:
            found = [r for r in reader.rows() if r.endpoint == "messages"]
        return found if len(found) == steps else None

    records = wait_for(rows)
    new = sorted(int(r.labels["pruning_elided_steps"]) for r in records if r.labels.get("pruning") == "compacted-new")
    assert new == [elided[r] for r in points]  # the ledger names the same compaction points
    assert all(r.counterfactual_micro_usd == r.cost_micro_usd + sum(r.savings_micro_usd.values()) for r in records)
