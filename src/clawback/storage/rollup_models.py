"""Rollup tables the ledger writer keeps next to the raw ``ledger`` rows, so readers never scan raw rows.

Three tables at two grains each (``period`` = ``"hour"`` and ``"day"``; ``"day"`` and ``"week"`` for entities;
UTC), created by migration ``0006_ledger_rollups``, and two of entity totals without a grain (``0007``):

* ``ledger_rollup_usage``: one row per bucket x model x key x team x feature x endpoint x cache status x
  cohort x error type, with request/error counts, tokens by kind, cost and counterfactual (micro-dollars),
  latency and time-to-first-token sums, and a fixed latency histogram (``lat_00`` ... ``lat_26``, edges in
  ``LATENCY_EDGES_MS``) from which percentiles are read without the raw rows.
* ``ledger_rollup_savings``: micro-dollars saved per pipeline stage (the ledger's ``savings_micro_usd``), by
  bucket x model x key x team x feature x cohort x stage. Stage names are an open set: a new stage (the
  semantic cache, say) appears here the first time it books a saving.
* ``ledger_rollup_entity``: per day and per week (Monday 00:00 UTC), per user, conversation (``session_id``) and
  agent, within key: the high-cardinality dimensions, kept out of the hourly grain and away from the other
  dimensions, where they would make the rollup as large as the ledger (a user spread over features and
  models multiplied its rows: 1.26 M entity rows for 1 M ledger rows in a first benchmark).

* ``ledger_rollup_entity_total``: one row per user / conversation / agent (``kind``, ``value``, across keys)
  with an upper bound of everything it ever spent (``cost_bound_micro_usd``: the sum of its requests'
  non-negative costs) and the first and last UTC day it was seen, indexed by that bound. It lets the
  dashboard find the largest spenders of a range without grouping every entity row of the range: the
  exact ranking is read from ``ledger_rollup_entity`` for the few candidates the bound cannot rule out
  (``clawback.dashboard.data.LedgerQueries.top_entities`` proves the result equal to the full GROUP BY).
  ``ledger_rollup_entity_key_total``: the same per entity and key, for the top spenders of some keys.
  Added by migration ``0007_entity_totals``, which also indexes ``ledger_rollup_entity`` by entity.

Dimensions are never NULL (a missing key or feature is ``""``) so that the unique constraints, which the
writer's ``ON CONFLICT ... DO UPDATE`` upserts target, treat "none" as one value on both backends.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Column, Float, Index, String, Table, UniqueConstraint

from clawback.storage.ledger_models import Base, BigIdType, UTCDateTime

__all__ = [
    "ENTITY_DIMENSIONS",
    "ENTITY_KEY_TOTAL_DIMENSIONS",
    "ENTITY_MEASURES",
    "ENTITY_TOTAL_DIMENSIONS",
    "LATENCY_COLUMNS",
    "LATENCY_EDGES_MS",
    "SAVINGS_DIMENSIONS",
    "SAVINGS_MEASURES",
    "USAGE_DIMENSIONS",
    "USAGE_MEASURES",
    "entity_key_total_table",
    "entity_table",
    "entity_total_table",
    "savings_table",
    "usage_table",
]

#: Upper edges (exclusive) of the latency histogram buckets, in milliseconds; the last bucket is open-ended.
#: Roughly x1.6 apart: a percentile read off the histogram is within one bucket of the true value.
LATENCY_EDGES_MS: tuple[float, ...] = (
    1, 2, 3, 5, 8, 12, 20, 30, 50, 80, 120, 200, 300, 500, 800,
    1200, 2000, 3000, 5000, 8000, 12000, 20000, 30000, 60000, 120000, 300000,
)  # fmt: skip
LATENCY_COLUMNS: tuple[str, ...] = tuple(f"lat_{i:02d}" for i in range(len(LATENCY_EDGES_MS) + 1))

USAGE_DIMENSIONS: tuple[str, ...] = (
    "period", "bucket_start", "model", "key_id", "team", "feature", "endpoint", "cache_status", "cohort",
    "error_type",
)  # fmt: skip
USAGE_MEASURES: tuple[str, ...] = (
    "requests", "errors", "streams", "input_tokens", "output_tokens", "cache_read_input_tokens",
    "cache_write_5m_input_tokens", "cache_write_1h_input_tokens", "cost_micro_usd", "counterfactual_micro_usd",
    "cache_read_requests", "cost_sq_sum", "latency_ms_sum", "ttft_ms_sum", "ttft_count", *LATENCY_COLUMNS,
)  # fmt: skip
SAVINGS_DIMENSIONS: tuple[str, ...] = (
    "period", "bucket_start", "model", "key_id", "team", "feature", "cohort", "stage",
)  # fmt: skip
SAVINGS_MEASURES: tuple[str, ...] = ("micro_usd", "requests")
ENTITY_DIMENSIONS: tuple[str, ...] = ("period", "bucket_start", "kind", "value", "key_id")
ENTITY_MEASURES: tuple[str, ...] = ("requests", "errors", "tokens", "cost_micro_usd", "counterfactual_micro_usd")


def _dims(*names: str) -> list[Column[Any]]:
    return [
        Column(name, UTCDateTime, nullable=False) if name == "bucket_start" else Column(name, String, nullable=False)
        for name in names
    ]


def _counts(*names: str) -> list[Column[Any]]:
    return [Column(name, BigInteger, nullable=False, default=0) for name in names]


def _floats(*names: str) -> list[Column[Any]]:
    return [Column(name, Float, nullable=False, default=0.0) for name in names]


#: ``cost_sq_sum`` is the sum of squared per-request costs (micro-dollars squared, a float: it overflows 64-bit
#: integers), for the variance behind the holdout comparison's confidence intervals; it is never a money figure.
_USAGE_FLOATS = ("cost_sq_sum", "latency_ms_sum", "ttft_ms_sum")

usage_table = Table(
    "ledger_rollup_usage",
    Base.metadata,
    Column("id", BigIdType, primary_key=True, autoincrement=True),
    *_dims(*USAGE_DIMENSIONS),
    *_counts(*(m for m in USAGE_MEASURES if m not in _USAGE_FLOATS)),
    *_floats(*_USAGE_FLOATS),
    UniqueConstraint(*USAGE_DIMENSIONS),
    Index("ix_ledger_rollup_usage_bucket_start", "bucket_start"),
)

savings_table = Table(
    "ledger_rollup_savings",
    Base.metadata,
    Column("id", BigIdType, primary_key=True, autoincrement=True),
    *_dims(*SAVINGS_DIMENSIONS),
    *_counts(*SAVINGS_MEASURES),
    UniqueConstraint(*SAVINGS_DIMENSIONS),
    Index("ix_ledger_rollup_savings_bucket_start", "bucket_start"),
)

entity_table = Table(
    "ledger_rollup_entity",
    Base.metadata,
    Column("id", BigIdType, primary_key=True, autoincrement=True),
    *_dims(*ENTITY_DIMENSIONS),
    *_counts(*ENTITY_MEASURES),
    UniqueConstraint(*ENTITY_DIMENSIONS),
    # One entity's rows of a range (the exact sums of the top spenders' candidates, their series): a lookup.
    # Range scans by (period, bucket_start) use the unique constraint; 0007 dropped the bucket_start index.
    Index("ix_ledger_rollup_entity_kind", "kind", "value", "period", "bucket_start"),
)

ENTITY_TOTAL_DIMENSIONS: tuple[str, ...] = ("kind", "value")
ENTITY_KEY_TOTAL_DIMENSIONS: tuple[str, ...] = ("kind", "key_id", "value")


def _totals(name: str, dims: tuple[str, ...]) -> Table:
    # The walk in decreasing bound order, restricted to entities seen in the range: read from the index alone.
    walk = [d for d in dims if d != "value"]
    return Table(
        name,
        Base.metadata,
        Column("id", BigIdType, primary_key=True, autoincrement=True),
        *_dims(*dims),
        Column("cost_bound_micro_usd", BigInteger, nullable=False, default=0),
        Column("first_day", UTCDateTime, nullable=False),
        Column("last_day", UTCDateTime, nullable=False),
        UniqueConstraint(*dims),
        Index(f"ix_{name}_kind", *walk, "cost_bound_micro_usd", "last_day", "first_day", "value"),
    )


entity_total_table = _totals("ledger_rollup_entity_total", ENTITY_TOTAL_DIMENSIONS)
entity_key_total_table = _totals("ledger_rollup_entity_key_total", ENTITY_KEY_TOTAL_DIMENSIONS)
