"""Keeping the rollup tables in step with the ledger: one upsert per touched rollup row, in the batch's transaction.

The ledger writer calls ``write_rollups(conn, records)`` with the records a batch really inserted (a retried
request or a replayed journal line already stored is not counted twice), inside the transaction that inserted
them: the rollups and the raw rows commit together or not at all, on SQLite and on PostgreSQL, so a rollup
never disagrees with the rows it sums.

The batch is first aggregated in Python (a 32-record batch touches a handful of rollup rows), then each
touched row is upserted with ``INSERT ... ON CONFLICT (dimensions) DO UPDATE SET m = m + excluded.m``: an
addition, so replicas writing the same rollup row at once both count (no read-modify-write race). Rows are
upserted in sorted key order so two replicas' transactions take the row locks in the same order (no
deadlock on PostgreSQL).

Cohort: the flags stage (issue 14) marks the holdout group on ledger rows. This module reads the label
``cohort`` (``holdout`` / ``treated``, or whatever the flags stage writes there); a row without it has
cohort ``""`` and the dashboard shows no holdout comparison until some row has one.

Entity totals (``ledger_rollup_entity_total``, and per key ``ledger_rollup_entity_key_total``): per user /
conversation / agent, the running sum of its requests' non-negative costs and the first and last day it
was seen, upserted with an addition and ``min`` / ``max`` (commutative too, so replicas can interleave).
"""

from __future__ import annotations

import functools
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Table

from clawback.storage.rollup_models import (
    ENTITY_DIMENSIONS,
    ENTITY_KEY_TOTAL_DIMENSIONS,
    ENTITY_MEASURES,
    ENTITY_TOTAL_DIMENSIONS,
    LATENCY_COLUMNS,
    LATENCY_EDGES_MS,
    SAVINGS_DIMENSIONS,
    SAVINGS_MEASURES,
    USAGE_DIMENSIONS,
    USAGE_MEASURES,
    entity_key_total_table,
    entity_table,
    entity_total_table,
    savings_table,
    usage_table,
)

if TYPE_CHECKING:  # the ledger writer imports this module
    from clawback.storage.ledger import LedgerRecord

__all__ = [
    "COHORT_LABEL",
    "PERIODS",
    "aggregate",
    "aggregate_entity_totals",
    "cohort_of",
    "latency_bucket",
    "write_rollups",
]

COHORT_LABEL = "cohort"
PERIODS: tuple[str, ...] = ("hour", "day")
#: The entity rollup's kinds and the record field each reads.
ENTITY_FIELDS: tuple[tuple[str, str], ...] = (("user", "user"), ("session", "session_id"), ("agent", "agent_id"))

_N_USAGE = len(USAGE_MEASURES)
_LAT0 = USAGE_MEASURES.index(LATENCY_COLUMNS[0])
_M = {name: i for i, name in enumerate(USAGE_MEASURES)}


def cohort_of(labels: Mapping[str, str]) -> str:
    """The experiment cohort a ledger row belongs to (``""`` when flags are not in use)."""
    return str(labels.get(COHORT_LABEL) or "")


def latency_bucket(latency_ms: float) -> int:
    """Index of the histogram bucket (``LATENCY_COLUMNS``) that ``latency_ms`` falls in."""
    return bisect_right(LATENCY_EDGES_MS, latency_ms)


def _buckets(stamp: datetime) -> tuple[datetime, datetime]:
    utc = stamp.astimezone(UTC)
    hour = utc.replace(minute=0, second=0, microsecond=0)
    return hour, hour.replace(hour=0)


Key = tuple[Any, ...]


def aggregate(
    records: Iterable[LedgerRecord],
) -> tuple[dict[Key, list[float]], dict[Key, list[int]], dict[Key, list[int]]]:
    """The rollup rows a set of records adds: (usage, savings, entity) maps from dimension tuple to measures."""
    usage: dict[Key, list[float]] = {}
    savings: dict[Key, list[int]] = {}
    entity: dict[Key, list[int]] = {}
    for r in records:
        hour, day = _buckets(r.started_at)
        key_id, team, feature = r.key_id or "", r.team or "", r.feature or ""
        cohort = cohort_of(r.labels)
        error = 1 if r.status >= 400 else 0
        cost = r.cost_micro_usd
        tokens = (
            r.input_tokens + r.output_tokens + r.cache_read_input_tokens + r.cache_write_5m_input_tokens
            + r.cache_write_1h_input_tokens
        )  # fmt: skip
        lat = _LAT0 + latency_bucket(r.latency_ms)
        for period, bucket in (("hour", hour), ("day", day)):
            ukey = (period, bucket, r.model, key_id, team, feature, r.endpoint, r.cache_status or "", cohort,
                    r.error_type or "")  # fmt: skip
            m = usage.get(ukey)
            if m is None:
                m = usage[ukey] = [0] * _N_USAGE
            m[0] += 1
            m[1] += error
            m[2] += 1 if r.stream else 0
            m[3] += r.input_tokens
            m[4] += r.output_tokens
            m[5] += r.cache_read_input_tokens
            m[6] += r.cache_write_5m_input_tokens
            m[7] += r.cache_write_1h_input_tokens
            m[8] += cost
            m[9] += r.counterfactual_micro_usd
            m[10] += 1 if r.cache_read_input_tokens else 0
            m[11] += float(cost) * float(cost)
            m[12] += r.latency_ms
            if r.ttft_ms is not None:
                m[13] += r.ttft_ms
                m[14] += 1
            m[lat] += 1
            for stage, micro in r.savings_micro_usd.items():
                skey = (period, bucket, r.model, key_id, team, feature, cohort, stage)
                s = savings.get(skey)
                if s is None:
                    s = savings[skey] = [0, 0]
                s[0] += int(micro)
                s[1] += 1
        week = day - timedelta(days=day.weekday())
        for kind, attr in ENTITY_FIELDS:
            value = getattr(r, attr)
            if not value:
                continue
            for period, bucket in (("day", day), ("week", week)):
                ekey = (period, bucket, kind, value, key_id)
                e = entity.get(ekey)
                if e is None:
                    e = entity[ekey] = [0, 0, 0, 0, 0]
                e[0] += 1
                e[1] += error
                e[2] += tokens
                e[3] += cost
                e[4] += r.counterfactual_micro_usd
    return usage, savings, entity


def aggregate_entity_totals(records: Iterable[LedgerRecord]) -> tuple[dict[Key, list[Any]], dict[Key, list[Any]]]:
    """The entity-total rows a set of records adds, across keys and per key: (kind, value) and
    (kind, key_id, value) -> [cost bound, first day, last day].

    The bound sums ``max(cost, 0)``: never below what the entity spent in any set of buckets, even if a
    negative cost (a refund, say) were ever booked, which is all ``top_entities`` needs of it."""
    totals: dict[Key, list[Any]] = {}
    by_key: dict[Key, list[Any]] = {}
    for r in records:
        day = r.started_at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        cost = r.cost_micro_usd if r.cost_micro_usd > 0 else 0
        key_id = r.key_id or ""
        for kind, attr in ENTITY_FIELDS:
            value = getattr(r, attr)
            if not value:
                continue
            for into, k in ((totals, (kind, value)), (by_key, (kind, key_id, value))):
                t = into.get(k)
                if t is None:
                    into[k] = [cost, day, day]
                else:
                    t[0] += cost
                    if day < t[1]:
                        t[1] = day
                    if day > t[2]:
                        t[2] = day
    return totals, by_key


# The measure order in ``aggregate`` must match USAGE_MEASURES; checked once at import.
assert USAGE_MEASURES[:15] == (
    "requests", "errors", "streams", "input_tokens", "output_tokens", "cache_read_input_tokens",
    "cache_write_5m_input_tokens", "cache_write_1h_input_tokens", "cost_micro_usd", "counterfactual_micro_usd",
    "cache_read_requests", "cost_sq_sum", "latency_ms_sum", "ttft_ms_sum", "ttft_count",
)  # fmt: skip
assert ENTITY_MEASURES == ("requests", "errors", "tokens", "cost_micro_usd", "counterfactual_micro_usd")
assert SAVINGS_MEASURES == ("micro_usd", "requests")


_TABLES: dict[str, tuple[Table, Sequence[str], Sequence[str]]] = {
    "usage": (usage_table, USAGE_DIMENSIONS, USAGE_MEASURES),
    "savings": (savings_table, SAVINGS_DIMENSIONS, SAVINGS_MEASURES),
    "entity": (entity_table, ENTITY_DIMENSIONS, ENTITY_MEASURES),
}
#: Rows per multi-row upsert: 52 columns x 500 rows stays under SQLite's 32,766 bound variables.
_ROWS_PER_STATEMENT = 500


@functools.lru_cache(maxsize=64)
def _upsert_sql(dialect: str, name: str, rows: int) -> str:
    """``INSERT INTO t (...) VALUES (...), ... ON CONFLICT (dims) DO UPDATE SET m = t.m + excluded.m``.

    Written as driver SQL (one multi-row statement, the values a flat tuple), as the ledger's own insert is:
    SQLAlchemy's per-row parameter processing cost ~3 us per rollup row and column set, which was most of
    the writer's rollup time, on the thread that competes with the gateway's event loop.
    """
    table, dims, measures = _TABLES[name]
    mark = "?" if dialect == "sqlite" else "%s"
    columns = [*dims, *measures]
    quoted = ", ".join(f'"{c}"' for c in columns)
    row = f"({', '.join([mark] * len(columns))})"
    updates = ", ".join(f'"{m}" = {table.name}."{m}" + excluded."{m}"' for m in measures)
    return (
        f"INSERT INTO {table.name} ({quoted}) VALUES {', '.join([row] * rows)} "
        f"ON CONFLICT ({', '.join(dims)}) DO UPDATE SET {updates}"
    )


@functools.lru_cache(maxsize=16)
def _totals_upsert_sql(dialect: str, table: str, rows: int) -> str:
    """The entity totals' upsert: the bound added, the first / last day kept as the min / max of both."""
    dims = _TOTALS[table][1]
    mark = "?" if dialect == "sqlite" else "%s"
    least, greatest = ("min", "max") if dialect == "sqlite" else ("LEAST", "GREATEST")
    columns = [*dims, "cost_bound_micro_usd", "first_day", "last_day"]
    row = f"({', '.join([mark] * len(columns))})"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([row] * rows)} "
        f"ON CONFLICT ({', '.join(dims)}) DO UPDATE SET "
        f"cost_bound_micro_usd = {table}.cost_bound_micro_usd + excluded.cost_bound_micro_usd, "
        f"first_day = {least}({table}.first_day, excluded.first_day), "
        f"last_day = {greatest}({table}.last_day, excluded.last_day)"
    )


_TOTALS: dict[str, tuple[Table, Sequence[str]]] = {
    entity_total_table.name: (entity_total_table, ENTITY_TOTAL_DIMENSIONS),
    entity_key_total_table.name: (entity_key_total_table, ENTITY_KEY_TOTAL_DIMENSIONS),
}


def _write_entity_totals(conn: Connection, records: Sequence[LedgerRecord]) -> int:
    dialect = conn.dialect.name
    bucket = _bucket_param(dialect)
    touched = 0
    for table, totals in zip(_TOTALS, aggregate_entity_totals(records), strict=True):
        keys = sorted(totals)  # one lock order for every replica
        touched += len(keys)
        if not keys:
            continue
        if dialect == "postgresql":
            params_list = [(*k, *totals[k]) for k in keys]
            conn.exec_driver_sql(_totals_upsert_sql(dialect, table, 1), params_list)
            continue
        for start in range(0, len(keys), _ROWS_PER_STATEMENT):
            chunk = keys[start : start + _ROWS_PER_STATEMENT]
            params: list[Any] = []
            for k in chunk:
                bound, first, last = totals[k]
                params.extend((*k, bound, bucket(first), bucket(last)))
            conn.exec_driver_sql(_totals_upsert_sql(dialect, table, len(chunk)), tuple(params))
    return touched


def _bucket_param(dialect: str) -> Any:
    """How a bucket start is bound: the ledger's UTC text on SQLite (``UTCDateTime``), a datetime elsewhere."""
    if dialect == "sqlite":
        return lambda stamp: stamp.isoformat(" ", "microseconds")[:26]
    return lambda stamp: stamp


def write_rollups(conn: Connection, records: Sequence[LedgerRecord]) -> int:
    """Add ``records`` to the rollups through ``conn`` (the caller's transaction); returns rows upserted."""
    if not records:
        return 0
    dialect = conn.dialect.name
    bucket = _bucket_param(dialect)
    touched = 0
    usage, savings, entity = aggregate(records)
    by_table: tuple[tuple[str, Mapping[Key, Sequence[float]]], ...] = (
        ("usage", usage), ("savings", savings), ("entity", entity),
    )  # fmt: skip
    for name, rows in by_table:
        keys = sorted(rows)  # one lock order for every replica
        if dialect == "postgresql":
            # One prepared single-row upsert, executed for all rows in psycopg's pipeline mode: a multi-row
            # VALUES list of thousands of parameters was planned afresh for every batch (~1 ms a record).
            params_list = [(key[0], key[1], *key[2:], *rows[key]) for key in keys]
            if params_list:
                conn.exec_driver_sql(_upsert_sql(dialect, name, 1), params_list)
            touched += len(keys)
            continue
        for start in range(0, len(keys), _ROWS_PER_STATEMENT):
            chunk = keys[start : start + _ROWS_PER_STATEMENT]
            params: list[Any] = []
            for key in chunk:
                params.append(key[0])
                params.append(bucket(key[1]))
                params.extend(key[2:])
                params.extend(rows[key])
            conn.exec_driver_sql(_upsert_sql(dialect, name, len(chunk)), tuple(params))
        touched += len(keys)
    return touched + _write_entity_totals(conn, records)
