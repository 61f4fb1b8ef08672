"""Rollup tables for the dashboard and reports, filled from the ledger rows already stored.

Three tables at two grains (hour, day) that the ledger writer keeps in step with each batch it inserts
(``clawback.storage.rollups``), so that the dashboard and reports never scan raw ledger rows. Existing rows
are rolled up here, once, by a frozen copy of the writer's aggregation (a migration must not change when the
live code does).

Revision ID: 0006_ledger_rollups
Revises: 0005_flags
Create Date: 2026-12-02
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision: str = "0006_ledger_rollups"
down_revision: str | Sequence[str] | None = "0005_flags"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_EDGES = (1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200, 300, 500, 800,
          1200, 2000, 3000, 5000, 8000, 12000, 20000, 30000, 60000, 120000, 300000)  # fmt: skip
_LATENCY = [f"lat_{i:02d}" for i in range(len(_EDGES) + 1)]
_USAGE_DIMS = ["period", "bucket_start", "model", "key_id", "team", "feature", "endpoint", "cache_status", "cohort",
               "error_type"]  # fmt: skip
_USAGE_INTS = ["requests", "errors", "streams", "input_tokens", "output_tokens", "cache_read_input_tokens",
               "cache_write_5m_input_tokens", "cache_write_1h_input_tokens", "cost_micro_usd",
               "counterfactual_micro_usd", "cache_read_requests"]  # fmt: skip
_USAGE_FLOATS = ["cost_sq_sum", "latency_ms_sum", "ttft_ms_sum"]
_USAGE_MEASURES = [*_USAGE_INTS, *_USAGE_FLOATS, "ttft_count", *_LATENCY]
_SAVINGS_DIMS = ["period", "bucket_start", "model", "key_id", "team", "feature", "cohort", "stage"]
_SAVINGS_MEASURES = ["micro_usd", "requests"]
_ENTITY_DIMS = ["period", "bucket_start", "kind", "value", "key_id"]
_ENTITY_MEASURES = ["requests", "errors", "tokens", "cost_micro_usd", "counterfactual_micro_usd"]


def _dims(names: list[str]) -> list[sa.Column[Any]]:
    return [
        sa.Column(n, sa.DateTime(timezone=True) if n == "bucket_start" else sa.String(), nullable=False) for n in names
    ]


def _create(name: str, dims: list[str], ints: list[str], floats: list[str]) -> sa.Table:
    table = op.create_table(
        name,
        sa.Column("id", _big_id, primary_key=True, autoincrement=True),
        *_dims(dims),
        *[sa.Column(n, sa.BigInteger(), nullable=False) for n in ints],
        *[sa.Column(n, sa.Float(), nullable=False) for n in floats],
        sa.PrimaryKeyConstraint("id", name=f"pk_{name}"),
        sa.UniqueConstraint(*dims, name=f"uq_{name}_period"),
    )
    op.create_index(f"ix_{name}_bucket_start", name, ["bucket_start"])
    assert table is not None
    return table


def upgrade() -> None:
    usage = _create("ledger_rollup_usage", _USAGE_DIMS, [*_USAGE_INTS, "ttft_count", *_LATENCY], _USAGE_FLOATS)
    savings = _create("ledger_rollup_savings", _SAVINGS_DIMS, _SAVINGS_MEASURES, [])
    entity = _create("ledger_rollup_entity", _ENTITY_DIMS, _ENTITY_MEASURES, [])
    _backfill(usage, savings, entity)


def _stamp(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    stamp: datetime = value
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)


def _json(value: Any) -> dict[str, Any]:
    return dict(orjson.loads(value) if isinstance(value, (str, bytes)) else (value or {}))


def _backfill(usage: sa.Table, savings: sa.Table, entity: sa.Table) -> None:
    """Roll up the rows already in the ledger (the same sums the writer keeps from here on)."""
    conn = op.get_bind()
    u: dict[tuple[Any, ...], list[float]] = {}
    s: dict[tuple[Any, ...], list[int]] = {}
    e: dict[tuple[Any, ...], list[int]] = {}
    rows = conn.execute(sa.text(
        "SELECT started_at, model, key_id, team, feature, endpoint, cache_status, labels, error_type, status, "
        "stream, input_tokens, output_tokens, cache_read_input_tokens, cache_write_5m_input_tokens, "
        "cache_write_1h_input_tokens, cost_micro_usd, counterfactual_micro_usd, latency_ms, ttft_ms, "
        "savings_micro_usd, \"user\", session_id, agent_id FROM ledger"
    ).execution_options(yield_per=5000))  # fmt: skip
    for r in rows:
        labels, saved = _json(r.labels), _json(r.savings_micro_usd)
        hour = _stamp(r.started_at).replace(minute=0, second=0, microsecond=0)
        day = hour.replace(hour=0)
        key_id, team, feature = r.key_id or "", r.team or "", r.feature or ""
        cohort = str(labels.get("cohort") or "")
        error = 1 if r.status >= 400 else 0
        cost = int(r.cost_micro_usd)
        tokens = (r.input_tokens + r.output_tokens + r.cache_read_input_tokens + r.cache_write_5m_input_tokens
                  + r.cache_write_1h_input_tokens)  # fmt: skip
        for period, bucket in (("hour", hour), ("day", day)):
            key = (period, bucket, r.model, key_id, team, feature, r.endpoint, r.cache_status or "", cohort,
                   r.error_type or "")  # fmt: skip
            m = u.setdefault(key, [0] * len(_USAGE_MEASURES))
            for i, value in enumerate((1, error, 1 if r.stream else 0, r.input_tokens, r.output_tokens,
                                       r.cache_read_input_tokens, r.cache_write_5m_input_tokens,
                                       r.cache_write_1h_input_tokens, cost, r.counterfactual_micro_usd,
                                       1 if r.cache_read_input_tokens else 0, float(cost) * float(cost),
                                       r.latency_ms)):  # fmt: skip
                m[i] += value
            if r.ttft_ms is not None:
                m[13] += r.ttft_ms
                m[14] += 1
            m[15 + bisect_right(_EDGES, r.latency_ms)] += 1
            for stage, micro in saved.items():
                sm = s.setdefault((period, bucket, r.model, key_id, team, feature, cohort, stage), [0, 0])
                sm[0] += int(micro)
                sm[1] += 1
        week = day - timedelta(days=day.weekday())
        for kind, value in (("user", r.user), ("session", r.session_id), ("agent", r.agent_id)):
            if value:
                for period, bucket in (("day", day), ("week", week)):
                    em = e.setdefault((period, bucket, kind, value, key_id), [0, 0, 0, 0, 0])
                    for i, v in enumerate((1, error, tokens, cost, r.counterfactual_micro_usd)):
                        em[i] += v
    for table, dims, measures, sums in (
        (usage, _USAGE_DIMS, _USAGE_MEASURES, u),
        (savings, _SAVINGS_DIMS, _SAVINGS_MEASURES, s),
        (entity, _ENTITY_DIMS, _ENTITY_MEASURES, e),
    ):
        batch: list[dict[str, Any]] = []
        for key, values in sums.items():
            row = dict(zip(dims, key, strict=True))
            row.update(zip(measures, values, strict=True))
            batch.append(row)
            if len(batch) >= 2000:
                conn.execute(table.insert(), batch)
                batch = []
        if batch:
            conn.execute(table.insert(), batch)


def downgrade() -> None:
    for name in ("ledger_rollup_entity", "ledger_rollup_savings", "ledger_rollup_usage"):
        op.drop_index(f"ix_{name}_bucket_start", table_name=name)
        op.drop_table(name)
