"""The pruning stage: shrink long histories before the prompt-cache planner sees them.

Only ``messages`` requests, after the caches (a hit needs no pruning) and before the planner (it places
breakpoints on the pruned prefix). A request asking for Anthropic's own ``context_management`` is left to the
API unless the policy says ``respect_context_management: false`` (two pruners would invalidate each other's
cache). A pruned request goes out only if it passes the strict checks the simulator applies, else the original
is sent and the bug logged; a request already invalid, or of a shape pruning does not know (a role it has never
heard of, content of an unknown kind), is forwarded untouched, so the caller gets the API's own answer.
``role: "system"`` messages reach the upstream byte-identical and in place (a turn holding one is never dropped).
The decision is recorded in the ledger row's labels (``pruning``, ``pruning_tokens_before`` /
``_after``, ``pruning_boundary_turn``, ``pruning_dropped_turns``, ``pruning_elided_steps``).

The saving is settled once the upstream has answered (``PruningStage.settle``): the tokens no longer sent, at
the rate they would have been billed in the caller's request, less the premium of rewriting the cache at a new
compaction point. Why after the answer: the pruner's token figures are fast estimates, and only the upstream's
usage says how the history was billed. The money, the tool-loop frontier and the safety net in detail:
``docs/pruning.md``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from clawback.api.errors import InvalidRequestError
from clawback.api.messages import content_blocks, count_cache_breakpoints, validate_messages_request
from clawback.api.usage import Usage
from clawback.config import PruningPolicy, PruningSettings
from clawback.pipeline.context import Mode, Reply, RequestContext, Tenant
from clawback.pipeline.prompt_cache import PromptCachePlanner
from clawback.pipeline.pruning.conversation import loop_start
from clawback.pipeline.pruning.pruner import (
    CacheRates,
    Plan,
    dropped_messages,
    dropped_turns_valid,
    extractive_memory,
    plan_pruning,
    region_digest,
    render,
)
from clawback.pipeline.pruning.relevance import Scorer, needed_terms_lost
from clawback.pipeline.pruning.summary import Summarizer, make_summary_store, transcript
from clawback.pipeline.stage import CallNext, Chain
from clawback.pricing import ModelPrice, PriceBook
from clawback.storage.summary_store import SummaryStore
from clawback.tokens import count_request_tokens, estimate_block_tokens, fast_tokens

__all__ = ["Booking", "PruneOutcome", "PruningStage", "policy_for"]

log = logging.getLogger("clawback.pruning")

_OVERRIDE_ORDER = ("team", "feature", "key")


def policy_for(settings: PruningSettings, tenant: Tenant) -> PruningPolicy:
    """The default policy with the overrides that match ``tenant`` applied (team, then feature, then key)."""
    values = {"team": tenant.team, "feature": tenant.feature, "key": tenant.key_id}
    policy: PruningPolicy = settings
    for kind in _OVERRIDE_ORDER:
        value = values[kind]
        override = settings.overrides.get(f"{kind}:{value}") if value else None
        if override is not None:
            policy = policy.model_copy(update=override.model_dump(exclude_unset=True))
    return policy


@dataclass(frozen=True, slots=True)
class Booking:
    """The pruner's fast token estimates behind a saving, and what pricing them needs."""

    price: ModelPrice
    cached: bool  # the caller's own request caches its history: the saving is priced so (see ``settle``)
    rewritten: int  # tokens a new compaction point writes to the cache again
    placeholder_tokens: int  # of the history sent, those of elision placeholders (prose: estimated about right)
    memory_tokens: int
    memory_text: str | None
    static_tokens: int  # tools and system prompt (the simulator's count): what precedes the history
    model: str


def _saving(price: ModelPrice, removed: float, rewritten: float, mode: str) -> int:
    """Micro-dollars saved: ``removed`` tokens at the rate the history was billed at (``mode``: ``read`` from the
    cache, ``write`` to it, or plain ``input``), less the premium of rewriting ``rewritten`` tokens that would
    otherwise have been read."""
    if mode == "read":
        value = Decimal(removed) * price.cache_read - Decimal(rewritten) * (price.cache_write_5m - price.cache_read)
    elif mode == "write":
        value = Decimal(removed) * price.cache_write_5m
    else:
        value = Decimal(removed) * price.input
    return int(value)


class PruneOutcome:
    """What pruning did to one request."""

    __slots__ = (
        "body", "booking", "cache_frontier", "decision", "plan", "saved_micro_usd", "tokens_after", "tokens_before",
    )  # fmt: skip

    def __init__(
        self,
        body: dict[str, Any],
        decision: str,
        plan: Plan | None = None,
        tokens_before: int = 0,
        tokens_after: int = 0,
        saved_micro_usd: int = 0,
        cache_frontier: int | None = None,
    ) -> None:
        self.body = body
        self.decision = decision
        self.plan = plan
        self.tokens_before = tokens_before
        self.tokens_after = tokens_after
        self.saved_micro_usd = saved_micro_usd
        self.cache_frontier = cache_frontier
        """The message of ``body`` the planner should put a ``frontier`` breakpoint on (``None``: none), so that
        the next compaction point rewrites the cache only after it."""
        self.booking: Booking | None = None
        """What ``PruningStage.settle`` needs to book the saving once the upstream's usage is known."""


class PruningStage:
    name = "pruning"
    # flagged (``pipeline/flags.py``); shadow: plan as usual, send the original, book what the plan would have saved
    modes: tuple[Mode, ...] = ("off", "shadow", "on")

    def __init__(
        self,
        settings: PruningSettings,
        price_book: PriceBook,
        *,
        scorer: Scorer | None = None,
        store: SummaryStore | None = None,
    ) -> None:
        self.settings = settings
        self.price_book = price_book
        self.planner_below = False
        """Whether the prompt-cache planner sits below (``bind``): then the history this stage sends is cached."""
        self.scorer = scorer
        self.store = store or make_summary_store(settings)
        self.summarizer = Summarizer()
        self._policies: dict[tuple[str | None, str | None, str | None], PruningPolicy] = {}

    async def aclose(self) -> None:
        await self.store.aclose()

    def bind(self, chain: Chain) -> None:
        """Learn whether the planner sits below, and give the summarizer the whole pipeline (so the ledger books
        its requests)."""
        self.planner_below = chain.has_below(PromptCachePlanner)
        self.summarizer.pipeline = chain.entry

    def policy(self, tenant: Tenant) -> PruningPolicy:
        key = (tenant.team, tenant.feature, tenant.key_id)
        found = self._policies.get(key)
        if found is None:
            if len(self._policies) > 10_000:
                self._policies.clear()
            found = self._policies[key] = policy_for(self.settings, tenant)
        return found

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply:
        mode = ctx.mode(self.name)
        if ctx.endpoint != "messages" or mode == "off":
            return await call_next(ctx)
        policy = self.policy(ctx.tenant)
        if not policy.enabled:
            if not policy.shadow:
                return await call_next(ctx)
            mode = "shadow"  # the default: pruning off, what it would do recorded
        if mode == "shadow":
            return await self.shadow(ctx, policy, call_next)
        outcome = await self.prune(ctx, policy)
        ctx.cache_frontier = outcome.cache_frontier
        self.label(ctx, outcome)
        if outcome.body is ctx.body:
            return await call_next(ctx)
        ctx.replace_body(outcome.body)
        reply = await call_next(ctx)

        def book(done: Reply) -> None:
            ctx.savings.add(self.name, self.settle(outcome, done.usage, done.status))

        if reply.stream is None:
            book(reply)
        else:  # the usage is final when the stream ends (before the ledger, outermost, records)
            reply.on_close(book)
        return reply

    async def shadow(self, ctx: RequestContext, policy: PruningPolicy, call_next: CallNext) -> Reply:
        """Plan the pruning and send the original: nothing the client or the upstream sees changes (no summary
        request either: the memory is the extractive one), and the plan's saving goes to ``ctx.shadow_savings``,
        settled on the original request's usage (``settle(..., sent=False)``)."""
        body = ctx.body  # the stages below replace it, never change it in place
        planned: list[PruneOutcome] = []
        # planned while the upstream works on the request (the loop runs it once the request is on its way),
        # so that its CPU overlaps the upstream's wait rather than precede the send; here if the reply came first
        pending = asyncio.get_running_loop().call_soon(
            lambda: planned.append(self.prune_body(body, policy, shadow=True))
        )
        reply = await call_next(ctx)
        if not planned:
            pending.cancel()
            planned.append(self.prune_body(body, policy, shadow=True))
        outcome = planned[0]
        self.label(ctx, outcome, prefix="shadow:", original=body)
        if outcome.body is body:
            return reply

        def book(done: Reply) -> None:
            ctx.shadow_savings.add(self.name, self.settle(outcome, done.usage, done.status, sent=False))

        if reply.stream is None:
            book(reply)
        else:
            reply.on_close(book)
        return reply

    @staticmethod
    def label(
        ctx: RequestContext, outcome: PruneOutcome, prefix: str = "", original: dict[str, Any] | None = None
    ) -> None:
        """The decision in the ledger row's labels (``original``: the body pruned, when no longer ``ctx.body``)."""
        original = ctx.body if original is None else original
        labels = ctx.tenant.labels
        labels["pruning"] = prefix + outcome.decision
        if outcome.plan is not None:
            labels["pruning_tokens_before"] = str(outcome.tokens_before)
            labels["pruning_tokens_after"] = str(outcome.tokens_after)
            labels["pruning_boundary_turn"] = str(outcome.plan.boundary)
            labels["pruning_dropped_turns"] = str(len(outcome.plan.dropped))
            labels["pruning_elided_steps"] = str(outcome.plan.loop_steps)
            if prefix and outcome.body is not original:  # shadow: planned off the request's path
                lost = needed_terms_lost(original, outcome.body)
                labels["pruning_needed_terms_lost"] = str(len(lost))

    @staticmethod
    def settle(outcome: PruneOutcome, usage: Usage, status: int, *, sent: bool = True) -> int:
        """The saving booked once the upstream has said how it billed the pruned request.

        A failed request saved nothing. Otherwise the estimate (``saved_micro_usd``) is priced again with two
        corrections from the upstream's usage. The pruner's token figures are fast estimates (chars / 4: low on
        code, high on some prose), so the removed tokens are scaled by how far the same estimate was from the
        upstream's count of the history actually sent (the memory block, denser than the turns it replaces, is
        counted exactly, and the elision placeholders, prose whose estimate is close, are left out of that
        ratio, which is then the one of the outputs and turns like those removed). And when a cached request's
        history turns out not to have been read (the cache had expired after a pause longer than its TTL, or was
        never written), the removed tokens would have been written too, or sent as plain input, and are priced
        so; the request's compaction premium would have been paid anyway. How close this comes to the saving
        measured by replaying without pruning: ``clawback bench savings``, its ``booked`` column.

        ``sent=False`` (shadow mode): the upstream billed the original request, so the estimate's scale is taken
        from the original history as counted (the usage beyond the tools and system prompt) against the
        pruner's estimate of it, and whether the history was read from the cache from the original's usage."""
        booking = outcome.booking
        if status != 200 or booking is None:
            return 0
        memory = 0
        if booking.memory_text:
            memory = estimate_block_tokens({"type": "text", "text": booking.memory_text}, booking.model)
        # the history sent as the upstream counted it, memory and placeholders left out, against the estimate
        placeholders = booking.placeholder_tokens
        if sent:
            counted = usage.total_input_tokens - booking.static_tokens - memory - placeholders
            estimated = outcome.tokens_after - booking.memory_tokens - placeholders  # the turns and outputs sent
        else:
            counted, estimated = usage.total_input_tokens - booking.static_tokens, outcome.tokens_before
        scale = min(2.0, max(0.5, counted / estimated)) if estimated > 0 and counted > 0 else 1.0
        dropped = outcome.tokens_before - outcome.tokens_after + booking.memory_tokens + placeholders
        removed = max(0.0, dropped * scale - memory - placeholders)
        # Read from the cache beyond the tools and system prompt (5 % slack: the upstream counts them its own way)?
        read = usage.cache_read_input_tokens > booking.static_tokens * 1.05 + 16
        if not booking.cached:
            mode = "input"
        elif outcome.decision == "compacted-new" or read:
            mode = "read"  # the history was read from the cache (a new point rewrites it: its premium stands)
        else:
            mode = "write" if usage.cache_creation_input_tokens else "input"
        return _saving(booking.price, removed, booking.rewritten * scale, mode)

    async def prune(self, ctx: RequestContext, policy: PruningPolicy) -> PruneOutcome:
        """Prune ``ctx.body`` under ``policy`` (the summary, when asked for, goes through the pipeline)."""
        if policy.fact_memory != "summary":
            return self.prune_body(ctx.body, policy)
        memory: dict[str, str | None] = {}
        outcome = self.prune_body(ctx.body, policy, memory=memory)
        if outcome.plan is None or not outcome.plan.dropped:
            return outcome
        text = await self._summary(ctx, ctx.body, outcome.plan, policy)
        return self.prune_body(ctx.body, policy, memory={"text": text})

    def prune_body(
        self,
        body: dict[str, Any],
        policy: PruningPolicy,
        *,
        memory: dict[str, str | None] | None = None,
        shadow: bool = False,
    ) -> PruneOutcome:
        """The synchronous pruning of one request body (``memory``: a summary to use instead of facts;
        ``shadow``: only the decision is wanted, not the cache frontier an unchanged body goes out with)."""
        if policy.respect_context_management and body.get("context_management"):
            return PruneOutcome(body, "skipped:context_management")
        try:  # the shape pruning reasons about (roles, content as text or blocks); anything else goes out as is
            validate_messages_request(body, strict=False)
        except InvalidRequestError:
            return PruneOutcome(body, "skipped:invalid_request")  # the caller gets the upstream's own answer
        if shadow and _nothing_to_prune(body, policy):
            return PruneOutcome(body, "none")  # what plan_pruning would say, without its pricing and estimates
        price = self.price_book.get(str(body.get("model", "")))
        cached = self.is_cached(body, policy)
        rates = CacheRates(float(price.input), float(price.cache_write_5m), float(price.cache_read))
        frontier = self.frontier_cached(policy, cached)
        floor = static = None
        if frontier:  # the frontier's prefix is cached only from the model's minimum on, tools and system included
            static = count_request_tokens({**body, "messages": []})
            floor = max(0, price.min_cacheable_tokens - static)
        plan = plan_pruning(body, policy, rates=rates if cached else None, scorer=self.scorer, frontier_floor=floor)
        if plan is None:
            messages = body.get("messages")
            start = loop_start(messages) if frontier and isinstance(messages, list) else None
            return PruneOutcome(body, "none", cache_frontier=start)
        if memory is not None and "text" in memory:
            text = memory["text"]
        elif policy.fact_memory == "off" or memory is not None:
            text = None
        else:
            text = extractive_memory(body, plan)
        pruned, elided, placeholders = render(body, plan, text)
        problem: InvalidRequestError | None = None
        try:
            validate_messages_request(pruned, strict=True)
        except InvalidRequestError as exc:
            problem = exc
        if problem is not None or not dropped_turns_valid(body, plan, count_cache_breakpoints(pruned)):
            try:  # the whole original, as before pruning: an invalid one goes out untouched
                validate_messages_request(body, strict=True)
            except InvalidRequestError:
                return PruneOutcome(body, "skipped:invalid_request")
            if problem is not None:
                log.error("pruning produced an invalid request (%s); sending the original", problem)
                return PruneOutcome(body, "skipped:pruning_bug")
        memory_tokens = fast_tokens(len(text), plan.factor) + 1 if text else 0
        outcome, rewritten = self._account(pruned, plan, price, cached, memory_tokens + elided)
        if frontier and plan.loop_frontier is not None:
            outcome.cache_frontier = plan.output_index(plan.loop_frontier)
        client_cached = cached if not self.planner_below else self.is_cached(body, policy, planner=False)
        outcome.booking = Booking(
            price=price, cached=client_cached, rewritten=rewritten, placeholder_tokens=placeholders,
            memory_tokens=memory_tokens, memory_text=text,
            static_tokens=static if static is not None else count_request_tokens({**body, "messages": []}),
            model=str(body.get("model", "")),
        )  # fmt: skip
        return outcome

    def frontier_cached(self, policy: PruningPolicy, cached: bool) -> bool:
        """Whether the planner keeps a breakpoint on the tool-loop frontier (``PruneOutcome.cache_frontier``): it
        is on, the request is cached and tool loops are elided. Deliberately blind to the request's own markers:
        the loop's decisions are replayed on every request and must come out the same each time, whatever a
        client does with its breakpoints. A client that fills all four slots gets no frontier from the planner,
        and its compactions are then priced as a little cheaper than they are."""
        return cached and self.planner_below and policy.tool_elision and policy.keep_recent_tool_results is not None

    def is_cached(self, body: dict[str, Any], policy: PruningPolicy, *, planner: bool = True) -> bool:
        """Whether the history is (going to be) cached: a breakpoint in the messages or a top-level one, or the
        planner downstream (``planner=False``: the caller's own request alone). A breakpoint on the system
        prompt alone leaves the history uncached."""
        if policy.assume_prompt_cache is not None:
            return policy.assume_prompt_cache
        if (planner and self.planner_below) or body.get("cache_control"):
            return True
        messages = body.get("messages")
        if not isinstance(messages, list):
            return False
        # newest first: a client that caches its history marks its newest block, so this stops at once (a plain
        # string content is one text block, without a marker: ``content_blocks`` need not build it)
        return any(
            isinstance(m, dict) and not isinstance(m.get("content"), str) and any(
                b.get("cache_control") for b in content_blocks(m)
            ) for m in reversed(messages)
        )  # fmt: skip

    def _account(
        self, pruned: dict[str, Any], plan: Plan, price: ModelPrice, cached: bool, added: int
    ) -> tuple[PruneOutcome, int]:
        """Tokens before / after and the net saving (see the module docstring for the cache arithmetic), and the
        tokens a new compaction point rewrites.

        ``added`` is what the pruned form costs beyond the turns it keeps (the memory block, minus what
        tool-result elision took out of the kept turns and the tool loops).
        """
        before = plan.tokens_before
        after = max(0, before - sum(plan.turns[i].tokens for i in plan.dropped) + added)
        removed = max(0, before - after)
        rewritten = 0
        if cached:
            if plan.new_compaction:  # the opening too: no breakpoint ever ended there, so no entry does
                rewritten = max(0, after - plan.turns[-1].tokens)
            if plan.loop_new:  # written again from the frontier (or the start); its newest step would be anyway
                rewritten = max(rewritten, after - plan.loop_reused_tokens - plan.loop_last_step_tokens)
        saved = _saving(price, removed, rewritten, "read" if cached else "input")
        decision = "compacted-new" if plan.new_compaction or plan.loop_new else "compacted"
        return PruneOutcome(pruned, decision, plan, before, after, saved), rewritten

    async def _summary(
        self, ctx: RequestContext, body: dict[str, Any], plan: Plan, policy: PruningPolicy
    ) -> str | None:
        key = f"{policy.summary_model}:{region_digest(body, plan)}"
        stored = await self.store.get(key)
        if stored is None:  # once per compaction point: later turns find it here
            text = await self.summarizer.summarize(
                ctx, policy.summary_model, policy.summary_max_tokens, transcript(dropped_messages(body, plan))
            )
            stored = extractive_memory(body, plan, summary=text) if text else extractive_memory(body, plan)
            if stored is not None:
                await self.store.put(key, stored)
        return stored


def _nothing_to_prune(body: Mapping[str, Any], policy: PruningPolicy) -> bool:
    """Whether ``plan_pruning`` must return None, by a look at the messages only: the window condenses nothing
    while the completed turns are within ``keep_recent_turns`` (without tool results a turn starts at each user
    message: the completed ones are the user messages less the one in progress, and an assistant opener is a turn
    the window always keeps), and tool elision needs a ``tool_result``. Most short chats stop here, on every
    request of the default shadow."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return True
    users = 0
    for message in messages:
        if not isinstance(message, dict):
            continue
        if message.get("role") == "user":
            users += 1
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    return False
    return users <= policy.keep_recent_turns + 1
