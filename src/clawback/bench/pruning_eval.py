"""What each pruning strategy does to the reference workloads.

For every strategy the labelled conversations (``clawback.workloads``) are replayed in time order, request by
request, in four set-ups priced by the simulator's prompt-cache model and the pricing module:

* ``baseline``: the requests as the client sent them (its own breakpoints only);
* ``cache``: prompt caching on (the client's breakpoints plus automatic caching of the whole prefix, a
  top-level ``cache_control``), the bar pruning has to beat;
* ``pruned``: the pruned requests with the client's own breakpoints;
* ``pruned+cache``: the pruned requests with caching on (the pruner then prices its compactions as cached),
  and the prompt-cache planner's ``frontier`` breakpoint where pruning asks for one (``plan_request``).

Reported per strategy: input tokens (whole request, and the conversation history alone: what pruning can
act on), input + output cost of each set-up, and fact retention: the share of the facts a turn needs (the
workload's labels, read here and only here, never by the pruner) whose exact string is still in the request
that reaches the upstream. Tokens and facts are counted for both pruned set-ups (``pruned``, and ``_cached``:
``pruned+cache``, where pruning prices its decisions as cached and elides sooner once the planner's frontier
breakpoint makes a compaction cheap; the tables show them as "pruned / cached"). Figures are given for all
requests and for requests whose conversation has reached ``long_turns`` turns (20 by default), for the
workloads together and for each one (``workloads`` in the JSON).

What a turn is depends on the workload. In chat traffic, a human turn (a user message that is not tool
results). In agentic traffic (``Workload.turns_are_round_trips``: the ``agentic`` workload), an API round trip,
as in Anthropic's own usage (the Agent SDK's ``max_turns`` counts them): one human instruction is followed by
tens of tool round trips, so a coding session never reaches 20 human turns although its history is long. There
a request's turns are the requests of its session so far, itself included.

``evaluate_conversations`` scores a file of labelled conversations (``clawback.workloads.conversations``) the
same way, through the same replay, under the configured policy alone (the shipped defaults, switched on):
each conversation is replayed request by request as a client sends it, and only its final request carries
labels. Besides the figures above it reports the stale facts (values the conversation later corrected) that
the final request's memory block still holds, where it would read as current, and prefix stability: the share
of requests whose pruned history begins with the whole pruned history of the request before it (what the
prompt cache can read back; a compaction point breaks it once).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from clawback.api.usage import Usage
from clawback.config import PromptCacheSettings, PruningPolicy, PruningSettings
from clawback.pipeline.context import Reply, RequestContext
from clawback.pipeline.prompt_cache import PromptCachePlanner, plan_request
from clawback.pipeline.pruning.conversation import block_text, is_turn_start
from clawback.pipeline.pruning.facts import MEMORY_TAG
from clawback.pipeline.pruning.stage import PruningStage
from clawback.pipeline.stage import Pipeline
from clawback.pricing import PriceBook
from clawback.tokens import count_request_tokens
from clawback.upstream.simulator.prompt_cache import PromptCache
from clawback.workloads.conversations import (
    CONVERSATION_MODEL,
    LabelProblem,
    conversation_workload,
    label_problems,
    load_conversations,
)
from clawback.workloads.model import Workload

__all__ = [
    "STRATEGIES",
    "ConversationReport",
    "StrategyReport",
    "above_planner",
    "evaluate",
    "evaluate_conversations",
    "strategy_policies",
]

STRATEGIES: dict[str, dict[str, Any]] = {
    "window": {"relevance": False, "fact_memory": "off", "tool_elision": False},
    "window+relevance": {"relevance": True, "fact_memory": "off", "tool_elision": False},
    "window+facts": {"relevance": False, "fact_memory": "extractive", "tool_elision": False},
    "tool_elision": {"window": False, "relevance": False, "fact_memory": "off", "tool_elision": True},
    "all": {},
}

SETUPS = ("baseline", "cache", "pruned", "pruned+cache")


def strategy_policies(base: PruningPolicy | None = None) -> dict[str, PruningSettings]:
    """Each strategy as a full policy: the defaults (or ``base``) with only that strategy's switches."""
    defaults = (base or PruningSettings()).model_dump(exclude={"overrides"})
    return {
        name: PruningSettings(**{**defaults, "enabled": True, "assume_prompt_cache": None, **switches})
        for name, switches in STRATEGIES.items()
    }


_SENT = ("original", "pruned", "pruned+cache")  # the bodies whose tokens and facts are counted


@dataclass(slots=True)
class _Tally:
    requests: int = 0
    input_tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SENT, 0))
    history_tokens: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SENT, 0))
    cost: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(SETUPS, Decimal(0)))
    facts_needed: int = 0
    facts_kept: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SENT[1:], 0))
    stale_facts: int = 0
    stale_as_current: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_SENT[1:], 0))
    prefix_pairs: int = 0  # requests that follow one of the same session
    prefix_stable: int = 0  # ... whose pruned+cache history begins with the whole history of that one

    def as_dict(self) -> dict[str, Any]:
        def cut(tokens: dict[str, int], setup: str = "pruned") -> float:
            return round(1 - tokens[setup] / tokens["original"], 4) if tokens["original"] else 0.0

        def kept(setup: str) -> float:
            return round(self.facts_kept[setup] / self.facts_needed, 4) if self.facts_needed else 1.0

        costs = {k: round(float(v), 6) for k, v in self.cost.items()}
        return {
            "requests": self.requests,
            "input_tokens": dict(self.input_tokens),
            "input_token_reduction": cut(self.input_tokens),
            "input_token_reduction_cached": cut(self.input_tokens, "pruned+cache"),
            "history_tokens": dict(self.history_tokens),
            "history_token_reduction": cut(self.history_tokens),
            "history_token_reduction_cached": cut(self.history_tokens, "pruned+cache"),
            "cost_usd": costs,
            "cost_reduction_vs_cache": round(1 - costs["pruned+cache"] / costs["cache"], 4) if costs["cache"] else 0.0,
            "cost_reduction_vs_baseline": (
                round(1 - costs["pruned+cache"] / costs["baseline"], 4) if costs["baseline"] else 0.0
            ),
            "facts_needed": self.facts_needed,
            "fact_retention": kept("pruned"),
            "fact_retention_cached": kept("pruned+cache"),
            "stale_facts": self.stale_facts,
            "stale_as_current": self.stale_as_current["pruned"],
            "stale_as_current_cached": self.stale_as_current["pruned+cache"],
            "prefix_stability_cached": round(self.prefix_stable / self.prefix_pairs, 4) if self.prefix_pairs else 1.0,
        }


@dataclass(slots=True)
class StrategyReport:
    """One strategy's figures: ``all`` and ``long`` (20+ turns) over every workload, and the same per workload
    (``workloads[name]["all"]`` / ``["long"]``)."""

    strategy: str
    all: dict[str, Any]
    long: dict[str, Any]
    workloads: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    turn_units: dict[str, str] = field(default_factory=dict)  # workload -> "human turns" or "round trips"
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per session (conversation), when asked for: its figures over all its requests, its turns, and the needed
    facts lost / stale facts shown as current in its requests (pruned+cache set-up)."""


def _turns(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    return sum(1 for m in messages if isinstance(m, dict) and is_turn_start(m)) if isinstance(messages, list) else 0


@dataclass(frozen=True, slots=True)
class _Step:
    workload: str
    step: Any
    turns: int  # the conversation's turns at this request: human turns, or round trips (see the module doc)


def _history_tokens(body: dict[str, Any]) -> int:
    return count_request_tokens(body) - count_request_tokens({**body, "messages": []})


def _cached(body: dict[str, Any]) -> dict[str, Any]:
    return body if body.get("cache_control") else {**body, "cache_control": {"type": "ephemeral"}}


def _escaped(value: str) -> str:
    return orjson.dumps(value).decode()[1:-1]


def _fact_misses(body: dict[str, Any], facts: dict[str, str]) -> list[str]:
    """The facts whose exact string is not in ``body`` (as JSON: what reaches the upstream)."""
    text = orjson.dumps(body).decode()
    return [value for value in facts.values() if _escaped(value) not in text]


def _memory_text(body: dict[str, Any]) -> str:
    """The memory blocks pruning put in ``body`` (text blocks that open with the memory tag), joined."""
    found: list[str] = []
    messages = body.get("messages")
    for message in messages if isinstance(messages, list) else ():
        content = message.get("content") if isinstance(message, dict) else None
        for block in content if isinstance(content, list) else ():
            if isinstance(block, dict) and block.get("type") == "text":
                text = block_text(block)
                if text.startswith(MEMORY_TAG):
                    found.append(text)
    return "\n".join(found)


_NEGATION_BEFORE = re.compile(r"\b(?:not|instead of|rather than|no longer)\s+(?:the\s+|on\s+|at\s+|by\s+)?$")


def _presented_as_current(value: str, memory: str) -> bool:
    """Whether ``memory`` holds ``value`` as a whole word (any case), other than negated ("not june 1", the
    correction's own words): "june 15" does not present "june 1", "under 560, not 575" does not present 575."""
    for match in re.finditer(rf"(?<!\w){re.escape(value)}(?!\w)", memory, re.IGNORECASE):
        if not _NEGATION_BEFORE.search(memory[max(0, match.start() - 24) : match.start()].lower()):
            return True
    return False


def _stale_shown(body: dict[str, Any], stale: Sequence[str]) -> list[str]:
    """The stale values the memory block of ``body`` presents as current (verbatim turns also hold the
    correction after them; the memory is read as what is true now)."""
    memory = _memory_text(body) if stale else ""
    return [value for value in stale if memory and _presented_as_current(value, memory)]


def _prefix_of(previous: list[Any], current: list[Any]) -> bool:
    return len(previous) <= len(current) and all(a == b for a, b in zip(previous, current, strict=False))


def evaluate(
    workloads: Sequence[str] = ("lead_chat", "agentic"),
    *,
    seed: int = 0,
    scale: float = 1.0,
    long_turns: int = 20,
    base: PruningPolicy | None = None,
    price_book: PriceBook | None = None,
) -> list[StrategyReport]:
    """Replay ``workloads`` under every strategy; one report per strategy."""
    from clawback.workloads import build_workload

    book = price_book or PriceBook.bundled()
    built = [build_workload(name, seed=seed, scale=scale) for name in workloads]
    timeline = _timeline(built)
    reports: list[StrategyReport] = []
    for strategy, policy in strategy_policies(base).items():
        report = _replay(strategy, policy, timeline, long_turns, book)
        report.turn_units = timeline.units
        reports.append(report)
    return reports


@dataclass(slots=True)
class ConversationReport:
    """``evaluate_conversations``' figures: ``summary`` (the fields the issue names, over every request),
    ``long`` (requests at ``long_turns`` turns or more, in conversations that reach them), the full figures of
    both, and each conversation's."""

    summary: dict[str, Any]
    long: dict[str, Any]
    all_requests: dict[str, Any]
    long_conversations: dict[str, Any]
    conversations: dict[str, dict[str, Any]]
    label_problems: list[LabelProblem]


def _headline(row: dict[str, Any], conversations: int) -> dict[str, Any]:
    """The issue's named fields from a tally's figures (the pruned+cache set-up: the gateway's default, whose
    pruner prices its decisions as cached), and the pruned set-up's (the client's caching alone: none here)."""
    return {
        "conversations": conversations,
        "requests": row["requests"],
        "fact_retention": row["fact_retention_cached"],
        "facts_needed": row["facts_needed"],
        "history_reduction": row["history_token_reduction_cached"],
        "input_reduction": row["input_token_reduction_cached"],
        "cost_reduction_vs_cache_alone": row["cost_reduction_vs_cache"],
        "cost_usd_cache_alone": row["cost_usd"]["cache"],
        "cost_usd_pruned_and_cache": row["cost_usd"]["pruned+cache"],
        "stale_facts": row["stale_facts"],
        "stale_as_current": row["stale_as_current_cached"],
        "prefix_stability": row["prefix_stability_cached"],
        # the same request pruned without caching in the picture (every compaction pays: what the memory is
        # worth when pruning compacts freely, which caching makes rare on short conversations)
        "without_cache": {
            "fact_retention": row["fact_retention"],
            "history_reduction": row["history_token_reduction"],
            "input_reduction": row["input_token_reduction"],
            "stale_as_current": row["stale_as_current"],
        },
    }


def evaluate_conversations(
    path: Path,
    *,
    base: PruningPolicy | None = None,
    model: str = CONVERSATION_MODEL,
    long_turns: int = 20,
    price_book: PriceBook | None = None,
) -> ConversationReport:
    """Score the labelled conversations of ``path`` under ``base`` (default: the shipped policy), switched on.

    Raises ``ConversationFileError`` for a file that cannot be scored, ``ValueError`` for a model the price
    table does not know (an eval priced at a fallback row would be a wrong figure, not a warning)."""
    book = price_book or PriceBook.bundled()
    if not book.is_known(model):
        raise ValueError(f"unknown model {model!r}: the price table has no row for it (clawback pricing list)")
    conversations = load_conversations(path)
    workload = conversation_workload(conversations, name=path.stem, model=model)
    timeline = _timeline([workload])
    report = _replay("configured", strategy_policies(base)["all"], timeline, long_turns, book, per_session=True)
    long_ids = {c.id for c in conversations if timeline.longest.get(c.id, 0) >= long_turns}
    return ConversationReport(
        summary=_headline(report.all, len(conversations)),
        long=_headline(report.long, len(long_ids)),
        all_requests=report.all,
        long_conversations=report.long,
        conversations=report.sessions,
        label_problems=[p for c in conversations for p in label_problems(c)],
    )


@dataclass(slots=True)
class _Timeline:
    steps: list[_Step]
    output_tokens: dict[str, int]
    units: dict[str, str]
    longest: dict[str, int]  # session -> its most turns


def _timeline(workloads: Sequence[Workload]) -> _Timeline:
    """Every workload's requests on one clock, each with its conversation's turns at that request."""
    steps: list[_Step] = []
    output_tokens: dict[str, int] = {}
    units: dict[str, str] = {}
    for workload in workloads:
        name = workload.name
        output_tokens[name] = workload.output_tokens
        units[name] = "round trips" if workload.turns_are_round_trips else "human turns"
        trips: dict[str, int] = {}
        for step in sorted(workload, key=lambda s: (s.at_s, s.ref)):
            if workload.turns_are_round_trips:
                turns = trips[step.labels.session] = trips.get(step.labels.session, 0) + 1
            else:
                turns = _turns(step.request)
            steps.append(_Step(name, step, turns))
    steps.sort(key=lambda item: (item.step.at_s, item.step.ref))
    longest: dict[str, int] = {}
    for item in steps:
        session = item.step.labels.session
        longest[session] = max(longest.get(session, 0), item.turns)
    return _Timeline(steps, output_tokens, units, longest)


async def _offline(ctx: RequestContext) -> Reply:
    raise RuntimeError("offline evaluation: nothing goes upstream")


def above_planner(stage: PruningStage, price_book: PriceBook) -> PruningStage:
    """``stage`` bound above the prompt-cache planner, as ``build.py`` puts it when both are on (offline use:
    ``prune_body`` only, nothing is sent)."""
    Pipeline([stage, PromptCachePlanner(PromptCacheSettings(), price_book)], _offline)
    return stage


def _replay(
    strategy: str,
    policy: PruningSettings,
    timeline: _Timeline,
    long_turns: int,
    book: PriceBook,
    *,
    per_session: bool = False,
) -> StrategyReport:
    output_tokens, longest = timeline.output_tokens, timeline.longest
    plain = PruningStage(policy, book)
    planned = above_planner(PruningStage(policy, book), book)
    caches = {setup: PromptCache(clock=lambda: 0.0) for setup in SETUPS}
    tally_all, tally_long = _Tally(), _Tally()
    per_workload: dict[str, tuple[_Tally, _Tally]] = {}
    sessions: dict[str, tuple[_Tally, list[str], list[str]]] = {}  # tally, facts lost, stale shown (cached)
    previous: dict[str, list[Any]] = {}  # session -> the pruned+cache messages of its last request
    steps: Iterable[_Step] = timeline.steps
    for item in steps:
        workload, step = item.workload, item.step
        mine = per_workload.setdefault(workload, (_Tally(), _Tally()))
        original: dict[str, Any] = step.request
        model = str(original["model"])
        price = book.get(model)
        pruned = plain.prune_body(original, policy).body
        outcome = planned.prune_body(original, policy)
        pruned_cached = _cached(outcome.body)
        if outcome.cache_frontier is not None:  # the planner's frontier breakpoint (its only one here)
            pruned_cached = plan_request(
                pruned_cached, price, allowed=lambda kind: False, frontier=outcome.cache_frontier
            ).body
        bodies = {"baseline": original, "cache": _cached(original), "pruned": pruned, "pruned+cache": pruned_cached}
        cost: dict[str, Decimal] = {}
        for setup, body in bodies.items():
            account = caches[setup].account(
                "eval", body, min_cacheable_tokens=price.min_cacheable_tokens, now=step.at_s
            )
            caches[setup].activate(account, at=step.at_s + 0.5)
            usage = account.usage
            usage = Usage(
                usage.input_tokens, output_tokens[workload], usage.cache_read_input_tokens,
                usage.cache_write_5m_input_tokens, usage.cache_write_1h_input_tokens,
            )  # fmt: skip
            cost[setup] = book.cost(model, usage).total
        session = step.labels.session
        tallies = [tally_all, mine[0]]
        if longest.get(session, 0) >= long_turns and item.turns >= long_turns:
            tallies += [tally_long, mine[1]]
        needed, stale = step.labels.needed_facts, step.labels.stale_facts
        sent = {"original": original, "pruned": pruned, "pruned+cache": outcome.body}
        tokens = {name: count_request_tokens(body) for name, body in sent.items()}
        history = {name: _history_tokens(body) for name, body in sent.items()}
        lost = {name: _fact_misses(sent[name], needed) if needed else [] for name in _SENT[1:]}
        shown = {name: _stale_shown(sent[name], stale) for name in _SENT[1:]}
        messages = outcome.body.get("messages")
        messages = messages if isinstance(messages, list) else []
        before = previous.get(session)
        stable = None if before is None else _prefix_of(before, messages)
        previous[session] = messages
        if per_session:
            record = sessions.setdefault(session, (_Tally(), [], []))
            tallies.append(record[0])
            record[1].extend(lost["pruned+cache"])
            record[2].extend(shown["pruned+cache"])
        for tally in tallies:
            tally.requests += 1
            for name in _SENT:
                tally.input_tokens[name] += tokens[name]
                tally.history_tokens[name] += history[name]
            for setup, value in cost.items():
                tally.cost[setup] += value
            tally.facts_needed += len(needed)
            tally.stale_facts += len(stale)
            for name in _SENT[1:]:
                tally.facts_kept[name] += len(needed) - len(lost[name])
                tally.stale_as_current[name] += len(shown[name])
            if stable is not None:
                tally.prefix_pairs += 1
                tally.prefix_stable += stable
    workloads = {name: {"all": a.as_dict(), "long": b.as_dict()} for name, (a, b) in per_workload.items()}
    report = StrategyReport(strategy, tally_all.as_dict(), tally_long.as_dict(), workloads)
    report.sessions = {
        name: {"turns": longest.get(name, 0), **tally.as_dict(), "facts_lost": lost_facts, "stale_shown": stale_shown}
        for name, (tally, lost_facts, stale_shown) in sessions.items()
    }
    return report
