"""The budget stage: reserve the worst case before the call, settle to the booked cost after.

It sits right inside the ledger (which records what it decided, ``budget_status``) and outside the caches.
For each request on ``/v1/messages``:

1. The budgets that apply (``plan.scope_value_of``) are read from a snapshot of the database, re-read every
   ``budgets.refresh_s``; the first request waits for the first read, so no request slips past a budget
   because the gateway had just started.
2. The worst case (``plan.worst_case``) is reserved on every applicable budget in one atomic operation of
   the counter store: all fit, or nothing is reserved.
   * *exceeded* (settled spend + worst case over a limit): refused at once with a 429 naming the budget, its
     window and when it resets (``BudgetExceededError``; ``x-should-retry: false``), or, if the budget's
     action is ``downgrade``, retried once with its cheaper model and/or the largest ``max_tokens`` that fits
     (down to ``min_max_tokens``), said in the ``x-clawback-budget`` response header;
   * *blocked* (it would fit but for other requests' reservations, which usually settle for much less): the
     request waits, up to ``budgets.max_wait_s``, for them to settle, then is refused. So a request is never
     refused while the settled spend plus its worst case fits, unless it waited that long;
   * the store unreachable: refused with a 503 if any applicable budget fails closed, else let through
     (``fail_open``, counted in ``/metrics``); either way the ledger row says so.
3. After the call: settled to ``booked_cost`` (what the ledger books: nothing for an error or a cache hit,
   what the upstream billed so far for a client disconnect), right after the ledger stage has booked it;
   released if the call raised. A settle that cannot reach the store is retried in the background.
4. Reservations are leases (``budgets.lease_s``), renewed every third of a lease while the call runs, so a
   gateway that dies strands its reservations for at most one lease.

Alerts are judged after each settle (``alerts.py``), and counters are reconciled against the ledger every
``budgets.reconcile_interval_s`` (``reconcile.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prometheus_client import generate_latest
from sqlalchemy import Engine

from clawback.api.errors import ApiError, BudgetExceededError, BudgetUnavailableError
from clawback.api.usage import Usage
from clawback.config import BudgetSettings
from clawback.pipeline.budget.alerts import Alerts, BudgetMetrics
from clawback.pipeline.budget.plan import Applicable, WorstCase, counter_id, scope_value_of, worst_case
from clawback.pipeline.budget.reconcile import ledger_spend
from clawback.pipeline.budget.windows import window_of
from clawback.pipeline.context import Reply, RequestContext
from clawback.pipeline.ledger import booked_cost
from clawback.pipeline.stage import CallNext, Chain
from clawback.pricing import PriceBook, from_micro_usd
from clawback.storage.budget_counters import (
    CounterItem,
    CounterStore,
    CounterStoreUnavailable,
    CounterUsage,
    EmbeddedCounters,
    RedisCounters,
    ReserveOutcome,
)
from clawback.storage.budgets import Budget, BudgetStore

__all__ = ["BudgetStage", "counters_from_settings"]

log = logging.getLogger("clawback.budget")

_POLL_FIRST_S = 0.02
_POLL_MAX_S = 0.25


def counters_from_settings(settings: BudgetSettings) -> CounterStore:
    if settings.backend == "redis":
        return RedisCounters(settings.redis_url, settings.redis_prefix, settings.redis_timeout_s)
    return EmbeddedCounters()


@dataclass(slots=True)
class _Held:
    """A request's reservation while its call runs."""

    rid: str
    applicable: list[Applicable]
    reserved: bool = True


@dataclass(slots=True)
class _Decision:
    held: _Held
    header: str | None = None


@dataclass(slots=True)
class _PendingSettle:
    rid: str
    items: list[CounterItem]
    applicable: list[Applicable] = field(default_factory=list)


def _usd(micro: int) -> str:
    return f"${from_micro_usd(micro)}"


class BudgetStage:
    name = "budget"

    def __init__(
        self,
        settings: BudgetSettings,
        price_book: PriceBook,
        ledger_url: str | Engine,
        *,
        counters: CounterStore | None = None,
    ) -> None:
        self.settings = settings
        self.price_book = price_book
        self.store = BudgetStore(ledger_url)
        self.counters = counters if counters is not None else counters_from_settings(settings)
        self.metrics = BudgetMetrics()
        self.alerts = Alerts(settings, self.counters, self.store, self.metrics)
        self._budgets: list[Budget] = []
        self._loaded_at = float("-inf")
        self._first_load: asyncio.Lock | None = None
        self._reload: asyncio.Task[None] | None = None
        self._held: dict[str, _Held] = {}
        self._pending: list[_PendingSettle] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._background: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.last_reconciliation: list[dict[str, Any]] = []

    def bind(self, chain: Chain) -> None:
        """Nothing to learn from the stages below: a reservation covers whatever they do to the request."""

    # -- definitions

    async def budgets(self) -> list[Budget]:
        """The current definitions: a snapshot a background task re-reads every ``refresh_s``. A request never
        runs on an older one: when the snapshot is older than that (never read, changed by this process, or the
        refresher late), the request waits for a fresh read, so a budget created on another replica applies
        here within ``refresh_s`` even to the first request after a quiet spell."""
        self._ensure_background()
        if self._reload is None or self._reload.done():
            self._reload = self._spawn(self._refresh())
        if time.monotonic() - self._loaded_at > self.settings.refresh_s * 1.5:
            if self._first_load is None:
                self._first_load = asyncio.Lock()
            async with self._first_load:
                if time.monotonic() - self._loaded_at > self.settings.refresh_s * 1.5:
                    await self._load()
        return self._budgets

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(max(self.settings.refresh_s - (time.monotonic() - self._loaded_at), 0.01))
            if time.monotonic() - self._loaded_at >= self.settings.refresh_s:
                await self._load()

    async def _load(self) -> None:
        started = time.monotonic()
        try:
            self._budgets = await asyncio.to_thread(self.store.budgets, datetime.now(UTC))
        except Exception as exc:  # the database is down: keep enforcing what we knew
            log.warning("budgets: cannot read the definitions (%s); keeping the last ones", exc)
        self._loaded_at = started  # the snapshot is as old as the moment the read began

    def definitions_changed(self) -> None:
        """After an admin change in this process: the next request waits for the definitions to be re-read
        (other replicas see the change within ``refresh_s``)."""
        self._loaded_at = float("-inf")

    # -- the request path

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply:
        if ctx.endpoint != "messages":
            return await call_next(ctx)
        budgets = await self.budgets()
        if not budgets:
            return await call_next(ctx)
        now = datetime.now(UTC)
        tz = self.settings.timezone
        applicable = [
            Applicable(b, value, window_of(b, now, tz))
            for b in budgets
            if (value := scope_value_of(b, ctx.tenant)) is not None
        ]
        if not applicable:
            return await call_next(ctx)
        decision = await self._reserve(ctx, applicable)
        held = decision.held
        try:
            reply = await call_next(ctx)
        except BaseException:
            await asyncio.shield(self._spawn(self._settle(ctx, held, Usage())))
            raise
        if decision.header is not None:
            reply.headers.append(("x-clawback-budget", decision.header))
        # Settled on a task, which runs once this request has been handed back to the ledger stage: the counter
        # never counts a cost before the ledger has booked it (so a refusal is always justified by booked spend).
        if reply.stream is None:
            self._spawn_settle(ctx, held, reply)
        else:
            reply.on_close(lambda done: self._spawn_settle(ctx, held, done))
        return reply

    def _spawn_settle(self, ctx: RequestContext, held: _Held, done: Reply) -> None:
        try:
            self._spawn(self._settle(ctx, held, done.usage))
        except RuntimeError:  # no running loop (interpreter shutdown): keep it for the next chance
            self._pending.append(_PendingSettle(held.rid, self._items(held, ctx, done.usage), held.applicable))

    def _items(self, held: _Held, ctx: RequestContext, usage: Usage) -> list[CounterItem]:
        cost = booked_cost(self.price_book, ctx, usage)
        tokens = usage.total_input_tokens + usage.output_tokens
        now = datetime.now(UTC)
        items = []
        for a in held.applicable:
            window = window_of(a.budget, now, self.settings.timezone)
            items.append(CounterItem(a.cid, window.buckets, window.ttl_s, cost, tokens))
        return items

    async def _settle(self, ctx: RequestContext, held: _Held, usage: Usage) -> None:
        self._held.pop(held.rid, None)
        items = self._items(held, ctx, usage)
        try:
            after = await self.counters.settle(held.rid, items)
        except CounterStoreUnavailable as exc:
            log.warning("budgets: settle of %s postponed (%s)", held.rid, exc)
            self._pending.append(_PendingSettle(held.rid, items, held.applicable))
            return
        finally:
            self._wake()
        await self._check_alerts(held.applicable, items, after)

    async def _check_alerts(self, applicable: Sequence[Applicable], items: Sequence[CounterItem],
                            after: Sequence[CounterUsage]) -> None:  # fmt: skip
        now = datetime.now(UTC)
        for a, item, usage in zip(applicable, items, after, strict=True):
            if a.budget.thresholds or a.budget.forecast:
                current = Applicable(a.budget, a.value, window_of(a.budget, now, self.settings.timezone))
                if current.window.buckets == item.buckets:
                    await self.alerts.check(current, usage, now)

    def _items_for(self, applicable: Sequence[Applicable], cost: WorstCase, now: datetime) -> list[CounterItem]:
        items = []
        for a in applicable:
            limit_micro, limit_tokens, _ = a.budget.limits(now)
            items.append(CounterItem(a.cid, a.window.buckets, a.window.ttl_s, cost.micro_usd, cost.tokens,
                                     limit_micro, limit_tokens))  # fmt: skip
        return items

    async def _reserve(self, ctx: RequestContext, applicable: list[Applicable]) -> _Decision:
        rid = ctx.request_id
        cost = worst_case(self.price_book, ctx.body, self.settings.estimate_margin)
        deadline = time.monotonic() + self.settings.max_wait_s
        pause = _POLL_FIRST_S
        header: str | None = None
        while True:
            now = datetime.now(UTC)
            items = self._items_for(applicable, cost, now)
            try:
                outcome = await self.counters.reserve(rid, items, self.settings.lease_s)
            except CounterStoreUnavailable as exc:
                return self._store_down(ctx, applicable, exc)
            if outcome.status == "ok":
                ctx.budget_status = "downgraded" if header else "reserved"
                held = _Held(rid, applicable)
                self._held[rid] = held
                return _Decision(held, header)
            blocking = applicable[outcome.index]
            remaining = deadline - time.monotonic()
            if outcome.status == "blocked" and remaining > 0:
                await self._wait(min(pause, remaining))
                pause = min(pause * 1.5, _POLL_MAX_S)
                continue
            if header is None and blocking.budget.action == "downgrade":
                change = self._downgrade(ctx, blocking, items[outcome.index], outcome, now)
                if change is not None:
                    header = change
                    self.metrics.downgraded.labels(blocking.budget.name).inc()
                    cost = worst_case(self.price_book, ctx.body, self.settings.estimate_margin)
                    continue
            ctx.budget_status = "refused"
            self.metrics.refused.labels(blocking.budget.name, outcome.status).inc()
            raise self._refusal(blocking, items[outcome.index], outcome, cost, now)

    def _store_down(self, ctx: RequestContext, applicable: list[Applicable], exc: Exception) -> _Decision:
        closed = [a.budget.name for a in applicable if a.budget.on_store_error == "closed"]
        if closed:
            ctx.budget_status = "fail_closed"
            for name in closed:
                self.metrics.refused.labels(name, "store_unavailable").inc()
            raise BudgetUnavailableError(
                f"budget {', '.join(repr(n) for n in closed)}: the budget counters are unreachable and the budget "
                "fails closed (on_store_error=closed); retry shortly"
            ) from exc
        ctx.budget_status = "fail_open"
        for a in applicable:
            self.metrics.fail_open.labels(a.budget.name).inc()
        # Not reserved, but still settled: the spend is counted once the store is back.
        return _Decision(_Held(ctx.request_id, applicable, reserved=False))

    def _downgrade(self, ctx: RequestContext, blocking: Applicable, item: CounterItem, outcome: ReserveOutcome,
                   now: datetime) -> str | None:  # fmt: skip
        """Switch to the budget's cheaper model and/or lower ``max_tokens`` to what fits; None if nothing fits."""
        budget = blocking.budget
        body = dict(ctx.body)
        changes = []
        if budget.downgrade_model and budget.downgrade_model != body.get("model"):
            changes.append(f"model={body.get('model')}->{budget.downgrade_model}")
            body["model"] = budget.downgrade_model
        if budget.min_max_tokens is not None:
            used = outcome.usage
            room_micro = None if item.limit_micro_usd is None else item.limit_micro_usd - used.spent_micro_usd - (
                used.reserved_micro_usd)  # fmt: skip
            room_tokens = None if item.limit_tokens is None else item.limit_tokens - used.spent_tokens - (
                used.reserved_tokens)  # fmt: skip
            current = int(body.get("max_tokens") or 0)
            fitted = self._fit_max_tokens(body, budget.min_max_tokens, current, room_micro, room_tokens)
            if fitted is not None and fitted < current:
                changes.append(f"max_tokens={current}->{fitted}")
                body["max_tokens"] = fitted
        if not changes:
            return None
        ctx.replace_body(body)
        return f"downgraded budget={budget.name} " + " ".join(changes)

    def _fit_max_tokens(self, body: dict[str, Any], low: int, high: int, room_micro: int | None,
                        room_tokens: int | None) -> int | None:  # fmt: skip
        def fits(max_tokens: int) -> bool:
            cost = worst_case(self.price_book, {**body, "max_tokens": max_tokens}, self.settings.estimate_margin)
            return (room_micro is None or cost.micro_usd <= room_micro) and (
                room_tokens is None or cost.tokens <= room_tokens)  # fmt: skip

        if high < low or not fits(low):
            return None
        while low < high:  # the largest max_tokens in [low, high] that fits
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        return low

    def _refusal(self, blocking: Applicable, item: CounterItem, outcome: ReserveOutcome, cost: WorstCase,
                 now: datetime) -> ApiError:  # fmt: skip
        budget, window, used = blocking.budget, blocking.window, outcome.usage
        scope = "the organisation" if budget.scope == "org" else f"{budget.scope} {blocking.value}"
        if (item.limit_micro_usd is not None and used.spent_micro_usd + cost.micro_usd > item.limit_micro_usd) or (
            outcome.status == "blocked" and item.limit_micro_usd is not None
            and used.spent_micro_usd + used.reserved_micro_usd + cost.micro_usd > item.limit_micro_usd
        ):  # fmt: skip
            figures = (f"{_usd(used.spent_micro_usd)} spent and {_usd(used.reserved_micro_usd)} reserved of "
                       f"{_usd(item.limit_micro_usd)}; this request may cost up to {_usd(cost.micro_usd)}")  # fmt: skip
        else:
            figures = (f"{used.spent_tokens} tokens spent and {used.reserved_tokens} reserved of "
                       f"{item.limit_tokens}; this request may use up to {cost.tokens}")  # fmt: skip
        when = "resets" if not window.rolling else "frees up as spend ages out, next at"
        why = "exhausted" if outcome.status == "exceeded" else (
            f"held by requests in flight for {self.settings.max_wait_s:g} s")  # fmt: skip
        message = (f"clawback budget '{budget.name}' ({scope}) {why} for the {window.label}: {figures}. "
                   f"The window {when} {window.end.isoformat()}.")  # fmt: skip
        details = {
            "budget_id": budget.id, "budget": budget.name, "window": window.label,
            "resets_at": window.end.isoformat(), "limit_usd": None if item.limit_micro_usd is None else
            str(from_micro_usd(item.limit_micro_usd)), "limit_tokens": item.limit_tokens,
            "spent_usd": str(from_micro_usd(used.spent_micro_usd)), "reserved_usd":
            str(from_micro_usd(used.reserved_micro_usd)), "worst_case_usd": str(from_micro_usd(cost.micro_usd)),
            "reason": outcome.status,
        }  # fmt: skip
        return BudgetExceededError(message, details=details)

    # -- waiting, renewing, retrying, reconciling

    async def _wait(self, seconds: float) -> None:
        """Until a request of this process settles, or ``seconds`` (other replicas' settles are polled)."""
        if self._wakeup is None:
            self._wakeup = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()
            self._wakeup = asyncio.Event()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _ensure_background(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # the wrapper's AsyncAnthropic may be used from a new loop (a second asyncio.run)
            self._loop, self._background, self._reload, self._wakeup = loop, None, None, None
        if self._background is None or self._background.done():
            self._background = loop.create_task(self._maintain())

    async def _maintain(self) -> None:
        """Renew the leases of calls in flight, retry postponed settles, reconcile now and then."""
        period = self.settings.lease_s / 3
        last_reconcile = time.monotonic()
        while True:
            await asyncio.sleep(period)
            try:
                leases = [(a.cid, h.rid) for h in list(self._held.values()) if h.reserved for a in h.applicable]
                await self.counters.renew(leases, self.settings.lease_s)
                await self._retry_pending()
                if time.monotonic() - last_reconcile >= self.settings.reconcile_interval_s:
                    last_reconcile = time.monotonic()
                    await self.reconcile()
            except CounterStoreUnavailable:
                continue
            except Exception:
                log.exception("budgets: background maintenance failed")

    async def _retry_pending(self) -> None:
        pending, self._pending = self._pending, []
        for index, item in enumerate(pending):
            try:
                after = await self.counters.settle(item.rid, item.items)
            except CounterStoreUnavailable:
                self._pending.extend(pending[index:])
                return
            await self._check_alerts(item.applicable, item.items, after)

    async def usage(self, budget: Budget, value: str) -> CounterUsage:
        window = window_of(budget, datetime.now(UTC), self.settings.timezone)
        return await self.counters.usage(counter_id(budget, value), window.buckets)

    async def reconcile(self, budgets: Sequence[Budget] | None = None) -> list[dict[str, Any]]:
        """Counter vs ledger for every budget's current window; updates the drift gauge."""
        report = []
        now = datetime.now(UTC)
        for budget in budgets if budgets is not None else await self.budgets():
            window = window_of(budget, now, self.settings.timezone)
            spends = await asyncio.to_thread(ledger_spend, self.store.engine, budget, window, now)
            drift_total = 0
            for spend in spends:
                usage = await self.counters.usage(counter_id(budget, spend.value), window.buckets)
                drift = usage.spent_micro_usd - spend.micro_usd
                drift_total += drift
                limit_micro, limit_tokens, override = budget.limits(now)
                report.append({
                    "budget_id": budget.id, "budget": budget.name, "scope_value": spend.value,
                    "window": window.label, "window_start": window.start.isoformat(),
                    "resets_at": window.end.isoformat(),
                    "limit_usd": None if limit_micro is None else str(from_micro_usd(limit_micro)),
                    "limit_tokens": limit_tokens, "override": None if override is None else override.to_json(),
                    "spent_usd": str(from_micro_usd(usage.spent_micro_usd)), "spent_tokens": usage.spent_tokens,
                    "reserved_usd": str(from_micro_usd(usage.reserved_micro_usd)),
                    "reserved_tokens": usage.reserved_tokens, "reservations": usage.reservations,
                    "remaining_usd": None if limit_micro is None else str(from_micro_usd(
                        limit_micro - usage.spent_micro_usd - usage.reserved_micro_usd)),
                    "remaining_tokens": None if limit_tokens is None else
                    limit_tokens - usage.spent_tokens - usage.reserved_tokens,
                    "ledger_usd": str(from_micro_usd(spend.micro_usd)), "ledger_tokens": spend.tokens,
                    "drift_usd": str(from_micro_usd(drift)), "drift_tokens": usage.spent_tokens - spend.tokens,
                    "spent_micro_usd": usage.spent_micro_usd, "ledger_micro_usd": spend.micro_usd,
                    "drift_micro_usd": drift,
                })  # fmt: skip
                self.metrics.spent.labels(budget.name).set(usage.spent_micro_usd / 1_000_000)
            self.metrics.drift.labels(budget.name).set(drift_total / 1_000_000)
        self.last_reconciliation = report
        return report

    def render_metrics(self) -> bytes:
        return generate_latest(self.metrics.registry)

    async def aclose(self) -> None:
        if self._reload is not None:
            self._reload.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reload
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._background
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        with contextlib.suppress(CounterStoreUnavailable):
            await self._retry_pending()
        if self._pending:
            log.error("budgets: %d settles could not reach the counters before shutdown", len(self._pending))
        await self.alerts.aclose()
        await self.counters.aclose()
        await asyncio.to_thread(self.store.close)
