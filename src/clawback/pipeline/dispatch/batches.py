"""Booking Message Batches results: every item one ledger row, at batch prices, under its own request id.

Batches bypass the pipeline (they are forwarded unchanged, ``POST /v1/messages/batches`` and the rest), so the
ledger would never see the work they did. Their results are what the upstream billed: each ``succeeded`` line of
``GET /v1/messages/batches/{id}/results`` carries the item's model and final usage, priced here by the pricing
module with ``batch=True`` (50 % of standard prices, ``pricing.py``). Both front doors call ``book_batch_results``
on that reply (``clawback.gather(defer=True)`` fetches its results through the wrapper, so they are booked too).

The row's request id is ``<batch id>/<custom_id>``: results can be fetched as often as a client likes for 29 days,
and the ledger stores a request id once (``INSERT ... ON CONFLICT DO NOTHING``), so fetching twice books once. An
``errored``, ``canceled`` or ``expired`` item is not billed by the API and is booked with its status and error type
at no cost, so that the ledger holds every item.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from clawback.api.usage import Usage
from clawback.pipeline.context import Reply, RequestContext
from clawback.pipeline.ledger import RecordSink
from clawback.pricing import PriceBook
from clawback.storage.ledger import LedgerRecord

__all__ = ["book_batch_results"]

_RESULTS = re.compile(r"^/v1/messages/batches/([A-Za-z0-9_-]+)/results$")
_STATUS = {"errored": 500, "canceled": 499, "expired": 408}


def book_batch_results(ctx: RequestContext, reply: Reply, price_book: PriceBook, sinks: Sequence[RecordSink]) -> int:
    """Book the items of a batch's results reply (no-op for any other reply); the number of rows submitted."""
    match = _RESULTS.match(ctx.path)
    if ctx.method != "GET" or match is None or reply.status != 200 or not reply.body:
        return 0
    batch_id = match.group(1)
    now = datetime.now(UTC)
    booked = 0
    for line in reply.body.splitlines():
        if not line.strip():
            continue
        try:
            row: Any = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue
        record = _record(ctx, batch_id, row, price_book, now)
        if record is not None:
            for sink in sinks:
                sink(record)
            booked += 1
    return booked


def _record(ctx: RequestContext, batch_id: str, row: Any, price_book: PriceBook, now: datetime) -> LedgerRecord | None:
    if not isinstance(row, dict) or not isinstance(row.get("custom_id"), str):
        return None
    result = _object(row.get("result"))
    kind = result.get("type")
    message = _object(result.get("message"))
    model = str(message.get("model") or "-")
    usage = Usage.from_api(message.get("usage")) if kind == "succeeded" else Usage()
    cost = price_book.cost(model, usage, batch=True).micro_usd if kind == "succeeded" else 0
    error = _object(result.get("error"))
    inner = _object(error.get("error")) or error
    tenant = ctx.tenant
    return LedgerRecord(
        request_id=f"{batch_id}/{row['custom_id']}", started_at=now, finished_at=now, model=model,
        endpoint="batches", status=200 if kind == "succeeded" else _STATUS.get(str(kind), 500), latency_ms=0.0,
        batch=True, error_type=None if kind == "succeeded" else str(inner.get("type") or kind),
        key_id=tenant.key_id, user=tenant.user, team=tenant.team, feature=tenant.feature,
        session_id=tenant.session_id, agent_id=tenant.agent_id,
        labels={**tenant.labels, "batch_id": batch_id, "custom_id": row["custom_id"]},
        input_tokens=usage.input_tokens, output_tokens=usage.output_tokens,
        cache_read_input_tokens=usage.cache_read_input_tokens,
        cache_write_5m_input_tokens=usage.cache_write_5m_input_tokens,
        cache_write_1h_input_tokens=usage.cache_write_1h_input_tokens,
        cost_micro_usd=cost, counterfactual_micro_usd=cost, upstream_request_id=message.get("id"),
    )  # fmt: skip


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
