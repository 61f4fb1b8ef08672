"""Tool-output elision inside the turn in progress: an agent's tool loop, one human turn of many round trips."""

from __future__ import annotations

import itertools
from typing import Any

import orjson

from clawback.api.messages import count_cache_breakpoints, strip_cache_control, validate_messages_request
from clawback.api.usage import Usage
from clawback.bench.pruning_eval import above_planner
from clawback.config import PruningSettings
from clawback.pipeline.pruning.stage import PruningStage
from clawback.pricing import PriceBook
from clawback.tokens import count_request_tokens
from tests.unit.test_pruning import run, with_planner

BOOK = PriceBook.bundled()
MODEL = "claude-sonnet-4-6"
TOOLS = ["Read", "Grep", "Read", "Bash", "Read", "Edit"]
PLACEHOLDER = "[clawback: earlier tool output elided"


def policy(**kw: Any) -> PruningSettings:
    return PruningSettings(enabled=True, **kw)


def output(step: int) -> str:
    return "\n".join(f"{step:03d}:{n:04d}  def build_listing_{n}(items): return items[:{n}]" for n in range(90))


def loop(steps: int, *, thinking: bool = False, task: str = "Fix the failing scoring test.") -> list[dict[str, Any]]:
    """A human instruction and ``steps`` tool round trips, ending on the newest tool result."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": task}]}]
    for step in range(steps):
        content: list[dict[str, Any]] = []
        if thinking:
            content.append({"type": "thinking", "thinking": f"Step {step}: look further.", "signature": f"sig{step}"})
        content.append({"type": "text", "text": "Let me look."})
        tool = TOOLS[step % len(TOOLS)]
        content.append({"type": "tool_use", "id": f"toolu_{step:04d}", "name": tool, "input": {"step": step}})
        messages.append({"role": "assistant", "content": content})
        result = {"type": "tool_result", "tool_use_id": f"toolu_{step:04d}", "content": output(step)}
        messages.append({"role": "user", "content": [result]})
    return messages


def request(
    messages: list[dict[str, Any]], *, cached: bool = True, marker: bool = True, **extra: Any
) -> dict[str, Any]:
    """As a coding agent sends it: a breakpoint on the system prompt and one on the newest block (moved along)."""
    messages = [{"role": m["role"], "content": list(m["content"])} for m in messages]
    if marker:
        messages[-1]["content"][-1] = {**messages[-1]["content"][-1], "cache_control": {"type": "ephemeral"}}
    system: list[dict[str, Any]] = [{"type": "text", "text": "You are a coding agent."}]
    if cached:
        system[0]["cache_control"] = {"type": "ephemeral"}
    return {"model": MODEL, "max_tokens": 4096, "system": system, "messages": messages, **extra}


def results(body: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = [b for m in body["messages"] if isinstance(m["content"], list) for b in m["content"]]
    return [b for b in blocks if b["type"] == "tool_result"]


def elided(block: dict[str, Any]) -> bool:
    return isinstance(block["content"], str) and block["content"].startswith(PLACEHOLDER)


def stripped(messages: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(
        [{**m, "content": [strip_cache_control(b) for b in m["content"]]} for m in messages]  # the marker moves
    )


def test_consecutive_requests_of_one_tool_loop_keep_the_elided_prefix_until_the_next_compaction_point() -> None:
    settings = policy()
    stage = PruningStage(settings, BOOK)
    history = loop(40)
    outcomes = []
    for steps in range(1, 41):
        body = request(history[: 1 + 2 * steps])
        outcome = stage.prune_body(body, settings)
        validate_messages_request(outcome.body, strict=True)
        again = PruningStage(settings, BOOK).prune_body(body, settings)
        assert orjson.dumps(again.body) == orjson.dumps(outcome.body)  # deterministic
        outcomes.append(outcome)
    decisions = [o.decision for o in outcomes]
    points = decisions.count("compacted-new")
    assert 2 <= points <= 8, decisions  # in chunks, not on every round trip
    assert outcomes[-1].plan is not None and outcomes[-1].plan.loop_steps >= 20
    for previous, current in itertools.pairwise(outcomes):
        if current.decision == "compacted-new":
            continue
        old = previous.body["messages"]
        assert stripped(current.body["messages"][: len(old)]) == stripped(old)
    last = outcomes[-1]
    assert last.tokens_after < last.tokens_before / 2


def test_the_newest_tool_results_are_never_elided() -> None:
    for keep in (1, 2, 3, 5):
        settings = policy(keep_recent_tool_results=keep, keep_latest_per_tool=False, tool_loop_trigger_tokens=1)
        stage = PruningStage(settings, BOOK)
        for steps in (2, 3, 9, 30):
            body = request(loop(steps), cached=False, marker=False)
            pruned = stage.prune_body(body, settings).body
            found = results(pruned)
            assert found[-keep:] == results(body)[-keep:]
            assert all(elided(b) for b in found[:-keep])  # uncached: everything older goes at once
            validate_messages_request(pruned, strict=True)


def test_the_newest_result_of_each_tool_stays_until_the_tool_runs_again() -> None:
    settings = policy(keep_recent_tool_results=1, tool_loop_trigger_tokens=1, keep_latest_per_tool=True)
    body = request(loop(10), cached=False, marker=False)  # steps 0..9: Bash at 3 and 9, Edit at 5, Grep at 7
    found = results(PruningStage(settings, BOOK).prune_body(body, settings).body)
    assert [i for i, b in enumerate(found) if not elided(b)] == [5, 7, 8, 9]  # Edit, Grep, Read (newest), Bash


def test_thinking_blocks_tool_uses_and_ids_are_kept_and_markers_survive_on_elided_blocks() -> None:
    history = loop(12, thinking=True)
    history[4]["content"][0] = {**history[4]["content"][0], "cache_control": {"type": "ephemeral"}}  # an old result
    history[6]["content"][0] = {**history[6]["content"][0], "is_error": True}
    body = request(history, thinking={"type": "enabled", "budget_tokens": 2048})
    settings = policy(assume_prompt_cache=False)
    outcome = PruningStage(settings, BOOK).prune_body(body, settings)
    pruned = outcome.body
    validate_messages_request(pruned, strict=True)
    assert count_cache_breakpoints(pruned) == count_cache_breakpoints(body) == 3
    old, mine = body["messages"], pruned["messages"]
    assert len(mine) == len(old)
    assert elided(mine[4]["content"][0]) and mine[4]["content"][0]["cache_control"] == {"type": "ephemeral"}
    assert elided(mine[6]["content"][0]) and mine[6]["content"][0]["is_error"] is True
    assert "call the tool again" in mine[4]["content"][0]["content"]
    for before, after in zip(old, mine, strict=True):
        if before["role"] == "assistant":
            assert after is before  # thinking, text and tool_use blocks exactly as sent
        else:
            assert [b.get("tool_use_id") for b in after["content"]] == [b.get("tool_use_id") for b in before["content"]]


def test_a_breakpoint_inside_a_tool_result_keeps_it_whole() -> None:
    history = loop(10)
    block = history[2]["content"][0]
    inner = {"type": "text", "text": output(0), "cache_control": {"type": "ephemeral"}}
    history[2]["content"][0] = {**block, "content": [inner]}
    settings = policy(keep_recent_tool_results=1, tool_loop_trigger_tokens=1, assume_prompt_cache=False)
    pruned = PruningStage(settings, BOOK).prune_body(request(history, marker=False), settings).body
    assert pruned["messages"][2] is history[2] or pruned["messages"][2] == history[2]
    assert elided(pruned["messages"][4]["content"][0])


def test_elision_waits_while_it_does_not_pay_under_caching() -> None:
    body = request(loop(14))
    # over a single following round trip, rewriting the cache never pays: nothing is elided
    short = policy(expected_turns=1)
    outcome = PruningStage(short, BOOK).prune_body(body, short)
    assert outcome.plan is None and outcome.body is body
    # uncached, every saving pays at once
    uncached = policy(expected_turns=1, assume_prompt_cache=False)
    assert PruningStage(uncached, BOOK).prune_body(body, uncached).plan is not None
    # cached with the default horizon: it pays, and the request that reaches the point books the write premium
    settings = policy()
    stage = PruningStage(settings, BOOK)
    outcomes = [stage.prune_body(request(loop(n)), settings) for n in range(1, 15)]
    new = next(o for o in outcomes if o.decision == "compacted-new")
    later = outcomes[outcomes.index(new) + 1]
    assert later.decision == "compacted"
    assert new.saved_micro_usd < 0 < later.saved_micro_usd  # a full rewrite now, cheaper reads afterwards


def test_a_completed_tool_loop_keeps_its_elision_when_the_next_human_turn_starts() -> None:
    settings = policy()
    stage = PruningStage(settings, BOOK)
    history = loop(24)
    during = stage.prune_body(request(history, marker=False), settings)
    assert during.plan is not None and during.plan.loop_steps > 0
    history += [
        {"role": "assistant", "content": [{"type": "text", "text": "Fixed: the scorer deduplicates leads now."}]},
        {"role": "user", "content": [{"type": "text", "text": "Good. Now also update the changelog."}]},
    ]
    after = stage.prune_body(request(history, marker=False), settings)
    old = during.body["messages"]
    assert orjson.dumps(after.body["messages"][: len(old)]) == orjson.dumps(old)
    assert after.plan is not None and after.plan.loop_steps == 0 and after.decision == "compacted"


def test_labels_record_the_elided_steps() -> None:
    settings = policy()
    ctx = run(PruningStage(settings, BOOK), request(loop(30)))
    labels = ctx.tenant.labels
    assert labels["pruning"] in ("compacted", "compacted-new")
    assert int(labels["pruning_elided_steps"]) > 10
    assert int(labels["pruning_tokens_after"]) < int(labels["pruning_tokens_before"]) / 2
    assert "pruning" in ctx.savings.by_stage


def test_keep_recent_tool_results_none_leaves_the_turn_in_progress_alone() -> None:
    settings = policy(keep_recent_tool_results=None)
    body = request(loop(30))
    assert PruningStage(settings, BOOK).prune_body(body, settings).body is body


def test_the_frontier_prefix_is_byte_identical_on_the_next_request_even_at_a_compaction_point() -> None:
    """With the planner on, pruning names a frontier message (``cache_frontier``) the planner keeps a breakpoint
    on; everything up to it must be what the next request sends too, or that entry would never be read."""
    settings = policy()
    stage = above_planner(PruningStage(settings, BOOK), BOOK)
    history = loop(40)
    outcomes = [stage.prune_body(request(history[: 1 + 2 * steps]), settings) for steps in range(1, 41)]
    assert all(o.cache_frontier is not None for o in outcomes)
    for previous, current in itertools.pairwise(outcomes):
        assert previous.cache_frontier is not None
        end = previous.cache_frontier + 1
        assert stripped(current.body["messages"][:end]) == stripped(previous.body["messages"][:end])
    points = [i for i, o in enumerate(outcomes) if o.decision == "compacted-new"]
    assert len(points) >= 2
    frontiers = [o.cache_frontier for o in outcomes]
    assert frontiers[0] == 0 and frontiers[-1] is not None and frontiers[-1] > 20  # it moves with the loop


def test_a_cached_frontier_makes_elision_pay_sooner_and_book_only_what_follows_it() -> None:
    settings = policy()
    history = loop(40)
    runs = {}
    for planner in (False, True):
        stage = with_planner(PruningStage(settings, BOOK), planner)
        runs[planner] = [stage.prune_body(request(history[: 1 + 2 * n]), settings) for n in range(1, 41)]
    first = {p: next(i for i, o in enumerate(r) if o.decision == "compacted-new") for p, r in runs.items()}
    assert first[True] <= first[False]
    assert runs[True][-1].tokens_after < runs[False][-1].tokens_after
    # once the frontier's prefix is long enough to be cached, a compaction point books only what follows it
    points = [o.plan for o in runs[True] if o.decision == "compacted-new" and o.plan is not None]
    assert points[0].loop_reused_tokens == 0  # the task alone is below Sonnet's 1,024-token minimum
    first = next(i for i, plan in enumerate(points) if plan.loop_reused_tokens > 0)
    assert first <= 3 and all(plan.loop_reused_tokens > 0 for plan in points[first:]) and len(points) - first >= 3
    assert all(o.cache_frontier is None for o in runs[False])


def test_the_frontier_does_not_depend_on_the_clients_markers() -> None:
    """The loop's decisions replay on every request: a client that adds or moves breakpoints must not change
    them (the planner simply places no frontier when the client has used all four slots)."""
    settings = policy()
    stage = above_planner(PruningStage(settings, BOOK), BOOK)
    body = request(loop(24))
    full = orjson.loads(orjson.dumps(body))
    for i in (2, 4):  # with the system and newest-block markers: four, no slot left for the planner
        full["messages"][i]["content"][0]["cache_control"] = {"type": "ephemeral"}
    plain, crowded = stage.prune_body(body, settings), stage.prune_body(full, settings)
    assert plain.cache_frontier is not None and crowded.cache_frontier == plain.cache_frontier
    assert stripped(crowded.body["messages"]) == stripped(plain.body["messages"])
    off = policy(keep_recent_tool_results=None)
    assert stage.prune_body(body, off).cache_frontier is None


def test_an_elided_test_run_keeps_its_failure_lines_in_the_placeholder() -> None:
    history = loop(12)
    passed = [f"tests/test_scoring.py::test_rank_{i} PASSED" for i in range(60)]
    run_log = "\n".join([*passed, "tests/test_scoring.py::test_rank_60 FAILED", "==== 60 passed, 1 failed ===="])
    history[2] = {"role": "user", "content": [{**history[2]["content"][0], "content": run_log}]}
    settings = policy(keep_recent_tool_results=1, tool_loop_trigger_tokens=1, assume_prompt_cache=False)
    pruned = PruningStage(settings, BOOK).prune_body(request(history, marker=False), settings).body
    block = pruned["messages"][2]["content"][0]
    assert elided(block)
    # the failing test, and the line after it (here the run's summary)
    assert (
        "; its failure lines: tests/test_scoring.py::test_rank_60 FAILED | ==== 60 passed, 1 failed ====;"
        in (block["content"])
    )
    assert "test_rank_59 PASSED" not in block["content"]


def test_the_saving_is_settled_on_the_upstreams_usage() -> None:
    """``settle``: what the ledger books once the upstream has said how it billed the pruned request. The fast
    estimates are calibrated on the history sent, placeholders left out; on removed outputs denser in
    tokens than the rest (code, here 4-9 % low): never more than 5 % high, never more than 15 % low. On the
    reference workloads the ledger's total is within 3 % of the saving measured (``benchmarks/README.md``)."""

    def near(booked: int, exact: float) -> bool:
        return 0.85 * exact <= booked <= 1.05 * exact

    settings = policy(keep_recent_tool_results=1, tool_loop_trigger_tokens=1)
    stage = PruningStage(settings, BOOK)
    original, outcome = next(
        (body, found) for body in (request(loop(n)) for n in range(8, 30))
        if (found := stage.prune_body(body, settings)).decision == "compacted"
    )  # a request between two compaction points  # fmt: skip
    assert outcome.booking is not None and outcome.booking.cached
    sent = count_request_tokens(outcome.body)
    static = outcome.booking.static_tokens
    removed = count_request_tokens(original) - sent  # what the simulator would have billed more
    price = BOOK.get(MODEL)
    # the history read from the cache: the removed tokens would have been cache reads
    read = PruningStage.settle(outcome, Usage(10, 5, sent - 2000, 1990, 0), 200)
    assert near(read, removed * float(price.cache_read))
    # a pause let the cache expire: the history was written again, and so would the removed tokens have been
    expired = PruningStage.settle(outcome, Usage(10, 5, static, sent - static - 10, 0), 200)
    assert near(expired, removed * float(price.cache_write_5m))
    assert PruningStage.settle(outcome, Usage(), 529) == 0  # a failed request saved nothing
    # with the planner on but no marker of the caller's own, the caller's request would have sent them as input
    planned = above_planner(PruningStage(settings, BOOK), BOOK)
    bare = request(loop(16), cached=False, marker=False)
    outcome = planned.prune_body(bare, settings)
    assert outcome.booking is not None and not outcome.booking.cached
    sent = count_request_tokens(outcome.body)
    removed = count_request_tokens(bare) - sent
    plain = PruningStage.settle(outcome, Usage(10, 5, 4000, sent - 4010, 0), 200)
    assert near(plain, removed * float(price.input))
