"""The ledger stage: every request, priced once, recorded once.

It is the outermost stage so that it sees what the caller sent and what the caller got, whatever the
stages in between did. Cost comes from the pricing module; the counterfactual (what the caller's original
request would have cost with no optimization) is the cost plus what each stage says it saved. A stream is
recorded when it ends, also when the client disconnects mid-way (with the usage seen so far).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from clawback.api.errors import ApiError
from clawback.api.usage import Usage
from clawback.pipeline.context import Reply, RequestContext
from clawback.pipeline.stage import CallNext, Chain
from clawback.pricing import PriceBook
from clawback.storage.ledger import LedgerRecord

__all__ = ["LedgerStage", "RecordSink", "booked_cost"]

RecordSink = Callable[[LedgerRecord], None]


def booked_cost(price_book: PriceBook, ctx: RequestContext, usage: Usage) -> int:
    """The micro-dollars the ledger books for ``ctx`` given its final ``usage`` (budgets settle to this)."""
    if ctx.endpoint != "messages" or not ctx.model:
        return 0
    request = ctx.request
    return price_book.micro_usd(
        ctx.model, usage, batch=ctx.batch, inference_geo=request.inference_geo, speed=request.speed
    )


class LedgerStage:
    name = "ledger"

    def __init__(self, price_book: PriceBook, sinks: list[RecordSink]) -> None:
        self.price_book = price_book
        self.sinks = sinks

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply:
        try:
            reply = await call_next(ctx)
        except ApiError as exc:
            self.record(ctx, status=exc.status, usage=Usage(), error_type=exc.error_type, ttft=None)
            raise
        if reply.stream is None:
            self.record_reply(ctx, reply)
        else:
            reply.on_close(lambda done: self.record_reply(ctx, done))
        return reply

    def bind(self, chain: Chain) -> None:
        pass

    async def aclose(self) -> None:
        pass  # the sinks (the ledger writer) belong to the front door that built them

    def record_reply(self, ctx: RequestContext, reply: Reply) -> None:
        self.record(
            ctx,
            status=reply.status,
            usage=reply.usage,
            error_type=reply.error_type,
            ttft=reply.ttft,
            upstream_request_id=reply.upstream_request_id,
        )

    def record(
        self,
        ctx: RequestContext,
        *,
        status: int,
        usage: Usage,
        error_type: str | None,
        ttft: float | None,
        upstream_request_id: str | None = None,
    ) -> None:
        elapsed = time.monotonic() - ctx.started
        started_at = datetime.fromtimestamp(ctx.started_wall, UTC)
        cost = booked_cost(self.price_book, ctx, usage)
        tenant = ctx.tenant
        record = LedgerRecord(
            request_id=ctx.request_id,
            started_at=started_at,
            finished_at=started_at + timedelta(seconds=elapsed),
            model=ctx.model or "-",
            endpoint="count_tokens" if ctx.endpoint == "count_tokens" else "messages",
            status=status,
            latency_ms=elapsed * 1000,
            stream=ctx.stream,
            batch=ctx.batch,
            error_type=error_type,
            ttft_ms=ttft * 1000 if ttft is not None else None,
            key_id=tenant.key_id,
            user=tenant.user,
            team=tenant.team,
            feature=tenant.feature,
            session_id=tenant.session_id,
            agent_id=tenant.agent_id,
            labels={**tenant.labels, **ctx.labels} if ctx.labels else dict(tenant.labels),
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            cache_read_input_tokens=usage.cache_read_input_tokens,
            cache_write_5m_input_tokens=usage.cache_write_5m_input_tokens,
            cache_write_1h_input_tokens=usage.cache_write_1h_input_tokens,
            cost_micro_usd=cost,
            counterfactual_micro_usd=cost + ctx.savings.total,
            savings_micro_usd=dict(ctx.savings.by_stage),
            shadow_savings_micro_usd=dict(ctx.shadow_savings.by_stage),
            cache_status=ctx.cache_status,
            upstream_request_id=upstream_request_id,
            budget_status=ctx.budget_status,
        )
        for sink in self.sinks:
            sink(record)
