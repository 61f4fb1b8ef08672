"""The pruning stage: what it prunes, what it leaves alone, what it books, and the cache-stable schedule."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from clawback.api.messages import validate_messages_request
from clawback.api.usage import Usage
from clawback.bench.pruning_eval import above_planner
from clawback.config import PruningPolicy, PruningSettings
from clawback.pipeline import Pipeline, Reply, RequestContext
from clawback.pipeline.context import Decision, Tenant
from clawback.pipeline.pruning import PruningStage, policy_for, relevance
from clawback.pipeline.pruning.facts import extract_facts
from clawback.pipeline.pruning.relevance import Bm25Scorer, needed_terms_lost, select_relevant
from clawback.pricing import PriceBook
from clawback.tokens import count_request_tokens

BOOK = PriceBook.bundled()
MODEL = "claude-sonnet-4-6"
FACTS = {
    2: "Our budget tops out at $437,500.",
    4: "We're pre-approved with Lakeview Trust.",
    6: "Pets: two indoor cats.",
    8: "We only want Eastfield or Riverside.",
}
FILLER = (
    "That is a great question. Our agents walk every buyer through inspections, appraisals and closing, and "
    "we will send a checklist of documents before the first viewing so that nothing slows the offer down. "
)


def conversation(turns: int, *, current: str = "Which homes fit everything I told you?") -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    for turn in range(turns - 1):
        messages.append({"role": "user", "content": FACTS.get(turn, f"Tell me about step {turn} of buying.")})
        messages.append({"role": "assistant", "content": FILLER * 2})
    messages.append({"role": "user", "content": current})
    return messages


def body(turns: int, **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 100, "system": "You are Maya.", "messages": conversation(turns), **extra}


def with_planner(stage: PruningStage, planner: bool) -> PruningStage:
    """``stage`` bound above the prompt-cache planner when ``planner`` is true (as ``build.py`` puts them)."""
    return above_planner(stage, BOOK) if planner else stage


def run(stage: PruningStage, request: dict[str, Any], endpoint: str = "messages", **kw: Any) -> RequestContext:
    seen: list[RequestContext] = []

    async def terminal(ctx: RequestContext) -> Reply:
        seen.append(ctx)  # billed as the simulator bills a request that caches nothing
        return Reply(status=200, headers=[], body=b"{}", usage=Usage(count_request_tokens(ctx.body), 10))

    ctx = RequestContext(request_id="r", endpoint=endpoint, body=request, raw_body=orjson.dumps(request), **kw)
    asyncio.run(Pipeline([stage], terminal)(ctx))
    return seen[0]


def policy(**kw: Any) -> PruningSettings:
    return PruningSettings(enabled=True, **kw)


def test_a_long_conversation_is_compacted_with_its_facts_kept_and_the_saving_booked() -> None:
    stage = PruningStage(policy(), BOOK)
    ctx = run(stage, body(30))
    pruned = ctx.body
    validate_messages_request(pruned, strict=True)
    assert len(pruned["messages"]) < 59
    text = orjson.dumps(pruned).decode()
    for fact in FACTS.values():
        assert fact in text
    assert ctx.tenant.labels["pruning"].startswith("compacted")
    before, after = int(ctx.tenant.labels["pruning_tokens_before"]), int(ctx.tenant.labels["pruning_tokens_after"])
    assert after < before / 2
    # no caching on this request: the removed tokens are priced as plain input ($3 / MTok on Sonnet 4.6), the fast
    # estimates calibrated by the upstream's count of what was sent: within 2 % of the exact difference
    removed = count_request_tokens(body(30)) - count_request_tokens(pruned)
    assert abs(ctx.savings.by_stage["pruning"] - removed * 3) <= 0.02 * removed * 3
    assert pruned["messages"][-1] == {"role": "user", "content": "Which homes fit everything I told you?"}
    assert pruned["system"] == "You are Maya."


def test_short_conversations_and_count_tokens_pass_through_byte_for_byte() -> None:
    stage = PruningStage(policy(), BOOK)
    short = body(3)
    assert run(stage, short).raw_body == orjson.dumps(short)
    long = body(40)
    ctx = run(stage, long, endpoint="count_tokens")
    assert ctx.raw_body == orjson.dumps(long) and ctx.body is long
    assert "pruning" not in ctx.tenant.labels


def test_disabled_policy_and_holdout_flag_leave_the_request_alone() -> None:
    long = body(40)
    assert run(PruningStage(PruningSettings(), BOOK), long).body is long
    assert run(PruningStage(policy(), BOOK), long, decision=Decision({"pruning": "off"})).body is long


def test_context_management_requests_are_left_to_the_api_unless_configured() -> None:
    request = body(40, context_management={"edits": [{"type": "clear_tool_uses_20250919"}]})
    ctx = run(PruningStage(policy(), BOOK), request)
    assert ctx.body is request and ctx.tenant.labels["pruning"] == "skipped:context_management"
    ctx = run(PruningStage(policy(respect_context_management=False), BOOK), request)
    assert ctx.body is not request and ctx.body["context_management"] == request["context_management"]


def test_overrides_apply_per_team_feature_and_key() -> None:
    settings = PruningSettings(
        enabled=False,
        overrides={
            "team:sales": PruningPolicy(enabled=True, trigger_tokens=500),
            "feature:lead-chat": PruningPolicy(relevance=False),
            "key:key_1": PruningPolicy(trigger_tokens=700),
        },
    )
    merged = policy_for(settings, Tenant(key_id="key_1", team="sales", feature="lead-chat"))
    assert merged.enabled and not merged.relevance and merged.trigger_tokens == 700
    assert not policy_for(settings, Tenant(team="support")).enabled
    assert policy_for(settings, Tenant(team="sales")).trigger_tokens == 500


def test_the_same_history_gives_the_same_bytes_and_the_prefix_holds_between_compaction_points() -> None:
    stage = PruningStage(policy(), BOOK)
    outputs = []
    decisions = []
    for turns in range(10, 60):
        first = stage.prune_body(body(turns), stage.settings)
        again = PruningStage(policy(), BOOK).prune_body(body(turns), stage.settings)
        assert orjson.dumps(first.body) == orjson.dumps(again.body)
        outputs.append(first.body["messages"])
        decisions.append(first.decision)
    points = decisions.count("compacted-new")
    assert 2 <= points <= 15, decisions  # compaction happens in chunks, not on every turn
    for previous, current, decision in zip(outputs, outputs[1:], decisions[1:], strict=False):
        if decision != "compacted-new":
            assert orjson.dumps(current[: len(previous) - 1]) == orjson.dumps(previous[:-1])


def test_with_caching_a_compaction_waits_until_it_pays() -> None:
    request = body(24, cache_control={"type": "ephemeral"})
    # over a single following turn, a cache write of the short prefix never beats reading the long one
    assert PruningStage(policy(expected_turns=1), BOOK).prune_body(request, policy(expected_turns=1)).plan is None
    outcome = PruningStage(policy(), BOOK).prune_body(request, policy())
    assert outcome.plan is not None
    uncached = PruningStage(policy(), BOOK).prune_body(body(24), policy())
    # cached: removed tokens are worth cache reads, and a new compaction pays a write premium
    assert outcome.saved_micro_usd < uncached.saved_micro_usd


def test_tool_elision_keeps_pairs_and_shortens_old_outputs() -> None:
    messages: list[dict[str, Any]] = []
    for turn in range(12):
        messages.append({"role": "user", "content": f"Look up listing {turn}."})
        messages.append({"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": f"toolu_{turn}", "name": "listing", "input": {"n": turn}},
        ]})  # fmt: skip
        messages.append({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": f"toolu_{turn}", "content": "row " * 400},
        ]})  # fmt: skip
        messages.append({"role": "assistant", "content": "Here it is."})
    messages.append({"role": "user", "content": "Compare them."})
    request = {"model": MODEL, "max_tokens": 10, "messages": messages}
    only_elision = policy(window=False, relevance=False, fact_memory="off")
    outcome = PruningStage(only_elision, BOOK).prune_body(request, only_elision)
    pruned = outcome.body
    validate_messages_request(pruned, strict=True)
    assert len(pruned["messages"]) == len(messages)  # nothing dropped: the outputs are elided
    results = [b for m in pruned["messages"] if isinstance(m["content"], list) for b in m["content"]
               if b["type"] == "tool_result"]  # fmt: skip
    assert any(str(r["content"]).startswith("[clawback: earlier tool output elided") for r in results)
    assert results[-1]["content"] == "row " * 400  # the recent ones are kept


def test_invalid_requests_are_forwarded_untouched() -> None:
    request = body(40)
    request["messages"][10] = {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "nope"}]}
    outcome = PruningStage(policy(), BOOK).prune_body(request, policy())
    assert outcome.body is request


def test_facts_are_found_the_way_real_traffic_states_them() -> None:
    messages = [
        {"role": "user", "content": "Thanks! Our ceiling is $601,500. Pets: no pets at all. What do you think?"},
        {"role": "user", "content": "We can't do stairs because of my knee. Sounds good."},
        {"role": "assistant", "content": "I've booked a viewing for Tuesday at 3 pm. Great area, lots of parks."},
    ]
    facts = [text for _, text in extract_facts(messages)]
    assert facts == [
        "Our ceiling is $601,500.",
        "Pets: no pets at all.",
        "We can't do stairs because of my knee.",
        "I've booked a viewing for Tuesday at 3 pm.",
    ]


def test_an_agent_turn_keeps_its_instruction_whole_and_the_failure_lines_of_its_tool_outputs() -> None:
    run_log = "\n".join(
        [*(f"tests/test_scoring.py::test_rank_{i} PASSED" for i in range(30)),
         "tests/test_scoring.py::test_rank_30 FAILED", "E   AssertionError: 3 != 4",
         *(f"tests/test_export.py::test_csv_{i} FAILED" for i in range(8)),
         "==== 30 passed, 9 failed in 2.31s ===="]
    )  # fmt: skip
    instruction = "Use the existing logger in storage.py instead of print statements."
    messages = [
        {"role": "user", "content": instruction},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": run_log}]},
        {"role": "assistant", "content": "Two failures; I'll fix test_rank_30 first."},
    ]
    facts = extract_facts(messages)
    assert facts[0] == ("user", instruction)  # whole: the sentence splitter would cut it at "storage."
    failures = [text for role, text in facts if role == "tool"]
    assert failures == [
        "tests/test_scoring.py::test_rank_30 FAILED", "E AssertionError: 3 != 4",  # whitespace folded
        *(f"tests/test_export.py::test_csv_{i} FAILED" for i in range(3)),
    ]  # fmt: skip
    # the same words in a turn without tool calls are read sentence by sentence: every user sentence is kept,
    # and a period before a letter ("storage.py") does not end one
    chat = [{"role": "user", "content": instruction}, {"role": "assistant", "content": "Sure."}]
    assert extract_facts(chat) == [("user", instruction)]


def test_bm25_prefers_the_turn_that_shares_rare_terms() -> None:
    documents = ["We love the garden in Eastfield.", "Parking needs two spaces.", "Closing takes 30 days."]
    assert select_relevant(Bm25Scorer(), "How many parking spaces?", documents, max_items=1, min_score=0.1) == [1]


def test_bm25_scores_once_per_query_and_documents_and_hands_out_its_own_list() -> None:
    relevance._bm25_scores.cache_clear()
    documents = ["We love the garden in Eastfield.", "Parking needs two spaces.", "Closing takes 30 days."]
    first = Bm25Scorer().scores("How many parking spaces?", documents)
    first[1] = -1.0  # the caller's list: changing it changes nothing memoized
    again = Bm25Scorer().scores("How many parking spaces?", list(documents))
    assert again[1] > 0 and again[0] == again[2] == 0.0
    assert relevance._bm25_scores.cache_info().hits == 1
    assert Bm25Scorer(k1=2.0).scores("How many parking spaces?", documents) != again  # the parameters are keyed


def test_the_summary_is_asked_once_per_compaction_point_through_the_pipeline() -> None:
    calls: list[RequestContext] = []

    async def terminal(ctx: RequestContext) -> Reply:
        if ctx.tenant.labels.get("pruning") == "summary":
            calls.append(ctx)
            answer = {"content": [{"type": "text", "text": "- budget $437,500\n- two indoor cats"}]}
            return Reply(status=200, headers=[], body=orjson.dumps(answer))
        return Reply(status=200, headers=[], body=b"{}")

    settings = policy(fact_memory="summary")
    stage = PruningStage(settings, BOOK)
    pipeline = Pipeline([stage], terminal)  # binds the summarizer to it
    sent = []
    for turns in range(20, 27):
        request = body(turns)
        ctx = RequestContext(request_id="r", endpoint="messages", body=request, raw_body=None)
        asyncio.run(pipeline(ctx))
        sent.append((ctx.tenant.labels.get("pruning_boundary_turn"), ctx.body))
    points = {boundary for boundary, _ in sent if boundary is not None}
    assert len(points) >= 2 and len(calls) == len(points)  # once per compaction point, never per turn
    assert calls[0].body["model"] == "claude-haiku-4-5" and calls[0].mode("pruning") == "off"
    last = orjson.dumps(sent[-1][1]).decode()
    assert "budget $437,500" in last and "conversation-memory" in last
    validate_messages_request(sent[-1][1], strict=True)


def test_shadow_plans_the_summary_policy_without_asking_for_a_summary_and_sends_the_original() -> None:
    seen: list[RequestContext] = []

    async def terminal(ctx: RequestContext) -> Reply:
        seen.append(ctx)
        return Reply(status=200, headers=[], body=b"{}", usage=Usage(count_request_tokens(ctx.body), 10))

    pipeline = Pipeline([PruningStage(policy(fact_memory="summary"), BOOK)], terminal)
    for turns in range(20, 27):
        request = body(turns)
        raw = orjson.dumps(request)
        ctx = RequestContext("r", "messages", request, raw, decision=Decision({"pruning": "shadow"}))
        asyncio.run(pipeline(ctx))
        assert ctx.body is request and ctx.body_bytes() is raw  # the caller's exact bytes go out
        assert ctx.savings.total == 0 and ctx.cache_frontier is None
    assert len(seen) == 7  # one upstream call per request: no summary request in shadow
    booked = [c.shadow_savings.by_stage.get("pruning", 0) for c in seen]
    assert all(b > 0 for b in booked), booked  # the would-be saving of each compacted request
    assert all(c.tenant.labels["pruning"].startswith("shadow:compacted") for c in seen)


def test_by_default_pruning_runs_in_shadow_and_sends_the_callers_exact_bytes() -> None:
    settings = PruningSettings()
    assert not settings.enabled and settings.shadow
    ctx = run(PruningStage(settings, BOOK), body(30))  # no flags stage: the flag is "on", the policy is not
    assert ctx.body == body(30) and ctx.body_bytes() == orjson.dumps(body(30))
    assert ctx.savings.total == 0 and ctx.cache_frontier is None
    assert ctx.tenant.labels["pruning"].startswith("shadow:compacted")
    assert ctx.shadow_savings.by_stage["pruning"] > 0
    assert int(ctx.tenant.labels["pruning_tokens_after"]) < int(ctx.tenant.labels["pruning_tokens_before"])
    assert "pruning_needed_terms_lost" in ctx.tenant.labels

    quiet = run(PruningStage(PruningSettings(shadow=False), BOOK), body(30))
    assert "pruning" not in quiet.tenant.labels and not quiet.shadow_savings.by_stage


def test_the_needed_fact_heuristic_fires_when_the_message_refers_to_what_pruning_dropped() -> None:
    original = body(30)
    original["messages"][20] = {"role": "user", "content": "What's the Zephyr district like?"}
    original["messages"][-1] = {"role": "user", "content": "Back to Zephyr: remind me what you said."}
    pruned = {**original, "messages": [original["messages"][0], *original["messages"][-5:]]}
    assert needed_terms_lost(original, pruned) == {"zephyr"}
    memory = {
        "role": "user",
        "content": [{"type": "text", "text": "<conversation-memory>Zephyr</conversation-memory>"}],
    }
    assert needed_terms_lost(original, {**pruned, "messages": [memory, *pruned["messages"]]}) == set()
    assert needed_terms_lost(original, original) == set()

    ctx = run(PruningStage(PruningSettings(), BOOK), original)  # what shadow records is this figure
    outcome = PruningStage(PruningSettings(), BOOK).prune_body(original, PruningSettings())
    assert ctx.tenant.labels["pruning_needed_terms_lost"] == str(len(needed_terms_lost(original, outcome.body)))


def test_shadow_plans_while_the_upstream_works_so_the_client_waits_no_longer() -> None:
    events: list[str] = []
    stage = PruningStage(PruningSettings(), BOOK)
    plan = stage.prune_body

    def prune_body(*args: Any, **kw: Any) -> Any:
        events.append("planned")
        return plan(*args, **kw)

    stage.prune_body = prune_body  # type: ignore[method-assign]

    async def terminal(ctx: RequestContext) -> Reply:
        events.append("sent")
        await asyncio.sleep(0.05)  # the upstream thinking
        events.append("answered")
        return Reply(status=200, headers=[], body=b"{}", usage=Usage(count_request_tokens(ctx.body), 10))

    request = body(30)
    ctx = RequestContext(request_id="r", endpoint="messages", body=request, raw_body=orjson.dumps(request))
    asyncio.run(Pipeline([stage], terminal)(ctx))
    assert events == ["sent", "planned", "answered"]
    assert ctx.body is request and ctx.tenant.labels["pruning"].startswith("shadow:compacted")
    assert ctx.shadow_savings.by_stage["pruning"] > 0
