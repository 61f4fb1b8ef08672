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
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from clawback.api.usage import Usage
from clawback.config import PromptCacheSettings, PruningPolicy, PruningSettings
from clawback.pipeline.context import Reply, RequestContext
from clawback.pipeline.prompt_cache import PromptCachePlanner, plan_request
from clawback.pipeline.pruning.conversation import is_turn_start
from clawback.pipeline.pruning.stage import PruningStage
from clawback.pipeline.stage import Pipeline
from clawback.pricing import PriceBook
from clawback.tokens import count_request_tokens
from clawback.upstream.simulator.prompt_cache import PromptCache

__all__ = ["STRATEGIES", "StrategyReport", "above_planner", "evaluate", "strategy_policies"]

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


def _fact_hits(body: dict[str, Any], facts: dict[str, str]) -> int:
    text = orjson.dumps(body).decode()
    return sum(1 for value in facts.values() if orjson.dumps(value).decode()[1:-1] in text)


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
    steps: list[_Step] = []
    output_tokens: dict[str, int] = {}
    units: dict[str, str] = {}
    for name in workloads:
        workload = build_workload(name, seed=seed, scale=scale)
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
    reports: list[StrategyReport] = []
    for strategy, policy in strategy_policies(base).items():
        report = _replay(strategy, policy, steps, output_tokens, longest, long_turns, book)
        report.turn_units = units
        reports.append(report)
    return reports


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
    steps: Iterable[_Step],
    output_tokens: dict[str, int],
    longest: dict[str, int],
    long_turns: int,
    book: PriceBook,
) -> StrategyReport:
    plain = PruningStage(policy, book)
    planned = above_planner(PruningStage(policy, book), book)
    caches = {setup: PromptCache(clock=lambda: 0.0) for setup in SETUPS}
    tally_all, tally_long = _Tally(), _Tally()
    per_workload: dict[str, tuple[_Tally, _Tally]] = {}
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
        tallies = [tally_all, mine[0]]
        if longest.get(step.labels.session, 0) >= long_turns and item.turns >= long_turns:
            tallies += [tally_long, mine[1]]
        needed = step.labels.needed_facts
        sent = {"original": original, "pruned": pruned, "pruned+cache": outcome.body}
        tokens = {name: count_request_tokens(body) for name, body in sent.items()}
        history = {name: _history_tokens(body) for name, body in sent.items()}
        kept = {name: _fact_hits(sent[name], needed) if needed else 0 for name in _SENT[1:]}
        for tally in tallies:
            tally.requests += 1
            for name in _SENT:
                tally.input_tokens[name] += tokens[name]
                tally.history_tokens[name] += history[name]
            for setup, value in cost.items():
                tally.cost[setup] += value
            tally.facts_needed += len(needed)
            for name in _SENT[1:]:
                tally.facts_kept[name] += kept[name]
    workloads = {name: {"all": a.as_dict(), "long": b.as_dict()} for name, (a, b) in per_workload.items()}
    return StrategyReport(strategy, tally_all.as_dict(), tally_long.as_dict(), workloads)
