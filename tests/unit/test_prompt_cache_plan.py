"""``plan_request``: the planner's pure decision, here for the pruning frontier (see ``prompt_cache``)."""

from __future__ import annotations

from typing import Any

from clawback.api.messages import count_cache_breakpoints
from clawback.pipeline.prompt_cache import plan_request
from clawback.pipeline.pruning.stage import PruningStage
from clawback.pricing import PriceBook
from clawback.upstream.simulator.prompt_cache import PromptCache
from tests.unit.test_pruning import with_planner
from tests.unit.test_pruning_tool_loops import MODEL, loop, policy, request

BOOK = PriceBook.bundled()
PRICE = BOOK.get(MODEL)


def marked(body: dict[str, Any]) -> list[int]:
    """Indexes of the messages that carry a breakpoint."""
    return [
        i for i, m in enumerate(body["messages"])
        if isinstance(m["content"], list) and any(b.get("cache_control") for b in m["content"])
    ]  # fmt: skip


def test_the_frontier_gets_a_breakpoint_on_its_last_block() -> None:
    body = request(loop(12))
    plan = plan_request(body, PRICE, frontier=6)
    assert [(p.kind, p.index) for p in plan.added if p.kind == "frontier"]
    assert 6 in marked(plan.body) and count_cache_breakpoints(plan.body) <= 4
    frontier_block = plan.body["messages"][6]["content"][-1]
    assert frontier_block["cache_control"] == {"type": "ephemeral"}
    assert body["messages"][6]["content"][-1].get("cache_control") is None  # the caller's body is not touched


def test_no_frontier_breakpoint_on_the_tail_or_without_a_slot_or_below_the_minimum() -> None:
    body = request(loop(12))
    last = len(body["messages"]) - 1
    assert all(p.kind != "frontier" for p in plan_request(body, PRICE, frontier=last).added)  # the tail has one
    full = {**body, "tools": [
        {"name": n, "description": "x", "input_schema": {"type": "object"}, "cache_control": {"type": "ephemeral"}}
        for n in ("a", "b")
    ]}  # fmt: skip
    plan = plan_request(full, PRICE, frontier=6)
    assert not plan.added and count_cache_breakpoints(plan.body) == 4
    short = request(loop(12))
    plan = plan_request(short, PRICE, frontier=0)  # the task alone: far below Sonnet's 1,024-token minimum
    assert all(p.kind != "frontier" for p in plan.added)


def test_the_frontier_is_never_backed_off() -> None:
    plan = plan_request(request(loop(12)), PRICE, allowed=lambda kind: False, frontier=6)
    assert [p.kind for p in plan.added] == ["frontier"]


def test_a_compaction_point_reads_the_frontier_prefix_instead_of_rewriting_the_loop() -> None:
    """Pruning with the planner's frontier, billed by the simulator's cache: a compaction point reads what the
    requests before it cached up to the frontier; without it, every compaction rewrites the whole loop. (Whether
    the loop costs less in all depends on where it ends: a compaction just before the end never pays back. The
    workloads measure that: ``clawback eval pruning``.)"""
    settings = policy()
    history = loop(40)
    reads: dict[bool, list[int]] = {}
    for frontier in (False, True):
        stage = with_planner(PruningStage(settings, BOOK), frontier)
        cache = PromptCache(clock=lambda: 0.0)
        reads[frontier] = []
        for n in range(1, 41):
            outcome = stage.prune_body(request(history[: 1 + 2 * n]), settings)
            body = outcome.body
            if outcome.cache_frontier is not None:
                body = plan_request(body, PRICE, allowed=lambda kind: False, frontier=outcome.cache_frontier).body
            account = cache.account("t", body, min_cacheable_tokens=PRICE.min_cacheable_tokens, now=float(n))
            cache.activate(account, at=n + 0.5)
            if outcome.decision == "compacted-new":
                reads[frontier].append(account.usage.cache_read_input_tokens)
    assert len(reads[False]) >= 3 and len(reads[True]) >= 3
    assert all(read == 0 for read in reads[False])  # the system prompt alone is below the minimum
    # the first points come before the frontier's prefix reaches Sonnet's 1,024-token minimum; then every one reads
    first = next(i for i, read in enumerate(reads[True]) if read > 0)
    assert first <= 3 and all(read > 0 for read in reads[True][first:]) and len(reads[True]) - first >= 3


def test_markable_blocks_are_the_sdk_block_params_that_take_cache_control() -> None:
    """Every type the planner may mark accepts ``cache_control`` in the installed SDK's own types."""
    from typing import get_args

    import anthropic.types as sdk
    import anthropic.types.beta as sdk_beta

    from clawback.api.prompt_cache import MARKABLE_BLOCKS
    from tests.e2e.sdk_shapes import _members, _record, _strip

    takes: dict[str, bool] = {}
    for message_param in (sdk.MessageParam, sdk_beta.BetaMessageParam):
        for message in _members(message_param):
            record = _record(message)
            assert record is not None
            for member in _members(record[1].get("content")):
                for block in _members(getattr(_strip(member), "__args__", (member,))[0]):
                    params = _record(block)
                    if params is None or "type" not in params[1] or not params[0].endswith("Param"):
                        continue
                    for kind in get_args(_strip(params[1]["type"])):
                        takes[kind] = takes.get(kind, False) or "cache_control" in params[1]
    assert {kind for kind, ok in takes.items() if ok} >= MARKABLE_BLOCKS
    assert {"thinking", "redacted_thinking"} & MARKABLE_BLOCKS == set()


def test_a_block_the_planner_does_not_know_gets_no_marker() -> None:
    filler = "Viewings need 24 hours notice and photo ID. " * 300
    body = {
        "model": MODEL, "max_tokens": 10,
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": filler}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Noted."},
                                              {"type": "fallback", "model": "claude-x"}]},
        ],
    }  # fmt: skip
    plan = plan_request(body, PRICE)
    tail = next(p for p in plan.added if p.kind == "tail")
    assert plan.blocks[tail.index].path == "messages.1.content.0"  # the text before it, not the unknown block
