"""The dashboard's and reports' data layer: every figure they show, read from the rollup tables.

Queries go through SQLAlchemy Core, so the same code runs on SQLite and PostgreSQL, and read only the
rollups the ledger writer keeps (``clawback.storage.rollups``), never the raw ledger rows: a query's cost
grows with the number of rollup rows in the time range (buckets x dimension combinations), not with traffic.
A range of up to ``HOURLY_MAX`` is read at the hourly grain; a longer one at the daily grain, in whole UTC days.

Money arrives as integer micro-dollars (what ``clawback.pricing`` computed when the request was booked) and is
turned into dollars here only, by ``usd`` (floats for charts) or ``from_micro_usd`` (exact, for reports).
Results are pandas DataFrames: what Plotly, Streamlit's tables and CSV export take as they are.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Engine,
    Select,
    Table,
    and_,
    case,
    cast,
    func,
    inspect,
    literal,
    select,
    text,
)

from clawback.storage.rollup_models import (
    LATENCY_COLUMNS,
    LATENCY_EDGES_MS,
    entity_key_total_table,
    entity_table,
    entity_total_table,
    savings_table,
    usage_table,
)

__all__ = [
    "DIMENSIONS",
    "ENTITY_DAILY_MAX",
    "ENTITY_KINDS",
    "FILTER_COLUMNS",
    "HOURLY_MAX",
    "TOKEN_KINDS",
    "Filters",
    "LedgerQueries",
    "TimeRange",
    "error_rows",
    "percentile_from_histogram",
    "percentiles_from_histograms",
    "usd",
]

#: Longest range read at the hourly grain.
HOURLY_MAX = timedelta(days=3)
#: Longest range the largest spenders are read for at the daily grain (whole weeks beyond).
ENTITY_DAILY_MAX = timedelta(days=14)
#: Dimensions spend can be split by (columns of the usage rollup), with their labels.
DIMENSIONS: dict[str, str] = {
    "model": "model",
    "key_id": "key",
    "team": "team",
    "feature": "feature",
    "cohort": "cohort",
    "endpoint": "endpoint",
    "cache_status": "cache status",
}
#: High-cardinality dimensions kept in the daily entity rollup: kind -> label.
ENTITY_KINDS: dict[str, str] = {"user": "user", "session": "conversation", "agent": "agent"}
#: Token kinds and the rollup column of each.
TOKEN_KINDS: dict[str, str] = {
    "input": "input_tokens",
    "cache write 5m": "cache_write_5m_input_tokens",
    "cache write 1h": "cache_write_1h_input_tokens",
    "cache read": "cache_read_input_tokens",
    "output": "output_tokens",
}


def usd(micro: Any) -> Any:
    """Micro-dollars (as computed by ``clawback.pricing``) -> dollars, for display: works on scalars and columns."""
    return micro / 1_000_000


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``[start, end)`` in UTC; read hourly up to ``HOURLY_MAX``, daily (in whole UTC days) beyond."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("TimeRange bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError("TimeRange end must be after its start")

    @classmethod
    def last(cls, span: timedelta, now: datetime | None = None) -> TimeRange:
        end = (now or datetime.now(UTC)).astimezone(UTC)
        return cls(end - span, end)

    @property
    def period(self) -> str:
        return "hour" if self.end - self.start <= HOURLY_MAX else "day"

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self.period == "hour" else timedelta(days=1)

    def bounds(self) -> tuple[datetime, datetime]:
        """The bucket starts covered: from the bucket holding ``start`` to the one holding ``end``."""
        start, end = self.start.astimezone(UTC), self.end.astimezone(UTC)
        if self.period == "hour":
            return start.replace(minute=0, second=0, microsecond=0), end
        return start.replace(hour=0, minute=0, second=0, microsecond=0), end

    def halves(self) -> tuple[TimeRange, TimeRange]:
        middle = self.start + (self.end - self.start) / 2
        return TimeRange(self.start, middle), TimeRange(middle, self.end)


#: Filters attribute -> rollup column.
FILTER_COLUMNS: dict[str, str] = {
    "models": "model", "keys": "key_id", "teams": "team", "features": "feature", "cohorts": "cohort",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Filters:
    """Keep only these values of each dimension (empty: all)."""

    models: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    cohorts: tuple[str, ...] = ()

    def clauses(self, table: Table) -> list[ColumnElement[bool]]:
        out: list[ColumnElement[bool]] = []
        for attr, column in FILTER_COLUMNS.items():
            values: tuple[str, ...] = getattr(self, attr)
            if values and column in table.c:
                out.append(table.c[column].in_(values))
        return out


_LOW_EDGES = np.array([0.0, *LATENCY_EDGES_MS], dtype="float64")
_HIGH_EDGES = np.array([*LATENCY_EDGES_MS, LATENCY_EDGES_MS[-1] * 2], dtype="float64")


def percentiles_from_histograms(counts: Any, q: float) -> Any:
    """The ``q`` quantile (0-1) of each row of latency histograms (``LATENCY_COLUMNS`` buckets), interpolated
    linearly inside the bucket it falls in: exact to within that bucket (edges about x1.6 apart). NaN for an
    empty row. Vectorized: one pass over all rows, whatever their number."""
    matrix = np.asarray(counts, dtype="float64").reshape(-1, len(LATENCY_COLUMNS))
    cum = matrix.cumsum(axis=1)
    total = cum[:, -1]
    target = q * total
    index = (cum >= target[:, None]).argmax(axis=1)
    rows = np.arange(len(matrix))
    seen = np.where(index > 0, cum[rows, np.maximum(index - 1, 0)], 0.0)
    count = matrix[rows, index]
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = np.where(count > 0, (target - seen) / count, 0.0)
        value = _LOW_EDGES[index] + (_HIGH_EDGES[index] - _LOW_EDGES[index]) * fraction
    return np.where(total > 0, value, np.nan)


def error_rows(series: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``LedgerQueries.error_series`` a chart draws: the failed requests' rates by error type, or a
    zero line per bucket when no request failed (so an empty error chart still says "none" rather than nothing)."""
    errors = series[series["error_type"] != "(no error)"]
    if errors.empty:
        buckets = series.groupby("bucket", as_index=False)["requests"].sum()
        errors = buckets.assign(error_type="none", error_rate=0.0)
    return errors


def percentile_from_histogram(counts: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile of one histogram (see ``percentiles_from_histograms``); None when nothing was counted."""
    value = float(percentiles_from_histograms([counts], q)[0])
    return None if math.isnan(value) else value


def _total(column: Any) -> Any:
    """SUM of a column in the column's own type (PostgreSQL sums BIGINT as NUMERIC, which would come back as
    Decimal)."""
    return cast(func.coalesce(func.sum(column), 0), column.type)


def _sum(table: Table, column: str) -> Any:
    return _total(table.c[column]).label(column)


class LedgerQueries:
    """Every read the dashboard and the reports make (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._entity_totals = False  # known to exist (checked until it does)

    # -- plumbing ----------------------------------------------------------------------------------------

    def _where(self, table: Table, tr: TimeRange, filters: Filters | None, period: str | None = None) -> Any:
        start, end = tr.bounds()
        clauses = [table.c.period == (period or tr.period), table.c.bucket_start >= start, table.c.bucket_start < end]
        clauses += (filters or Filters()).clauses(table)
        return and_(*clauses)

    def _frame(self, stmt: Select[Any], columns: Sequence[str] | None = None) -> pd.DataFrame:
        with self.engine.connect() as conn:
            result = conn.execute(stmt)
            names = list(columns or result.keys())
            return pd.DataFrame(result.all(), columns=names)

    def _usage(
        self, tr: TimeRange, filters: Filters | None, groups: Sequence[str], measures: Sequence[str]
    ) -> pd.DataFrame:
        t = usage_table
        stmt = (
            select(*(t.c[g] for g in groups), *(_sum(t, m) for m in measures))
            .where(self._where(t, tr, filters))
            .group_by(*(t.c[g] for g in groups))
        )
        if groups:
            stmt = stmt.order_by(*(t.c[g] for g in groups))
        return self._frame(stmt, [*groups, *measures])

    # -- what exists -------------------------------------------------------------------------------------

    def tables(self) -> set[str]:
        return set(inspect(self.engine).get_table_names())

    def has_rollups(self) -> bool:
        return usage_table.name in self.tables()

    def data_span(self) -> tuple[datetime, datetime] | None:
        """First and last day holding traffic (day buckets), or None for an empty ledger."""
        t = usage_table
        stmt = select(func.min(t.c.bucket_start), func.max(t.c.bucket_start)).where(t.c.period == "day")
        with self.engine.connect() as conn:
            first, last = conn.execute(stmt).one()
        if first is None:
            return None
        return _aware(first), _aware(last) + timedelta(days=1)

    def options(self, tr: TimeRange) -> dict[str, list[str]]:
        """The values each filterable dimension takes in the range.

        One pass over the range's usage rows: the distinct combinations of the five dimensions (a few hundred:
        keys x their features x models x cohorts), split per column here. Five DISTINCT queries read the same
        rows five times (208 ms at 30 days and 1 M ledger rows on PostgreSQL)."""
        columns = ("model", "key_id", "team", "feature", "cohort")
        group = [usage_table.c[c] for c in columns]
        stmt = select(*group).where(self._where(usage_table, tr, None)).group_by(*group)
        with self.engine.connect() as conn:
            combos = conn.execute(stmt).all()
        return {c: sorted({row[i] for row in combos if row[i]}) for i, c in enumerate(columns)}

    # -- money and tokens --------------------------------------------------------------------------------

    def totals(self, tr: TimeRange, filters: Filters | None = None) -> dict[str, int]:
        """Exact integer sums over the range (micro-dollars for money) plus ``saved_micro_usd``."""
        measures = ("requests", "errors", *TOKEN_KINDS.values(), "cost_micro_usd", "counterfactual_micro_usd",
                    "cache_read_requests")  # fmt: skip
        frame = self._usage(tr, filters, (), measures)
        row = {m: int(frame[m].iloc[0]) if len(frame) else 0 for m in measures}
        row["saved_micro_usd"] = row["counterfactual_micro_usd"] - row["cost_micro_usd"]
        return row

    def spend_series(self, tr: TimeRange, filters: Filters | None = None, by: str = "model") -> pd.DataFrame:
        """Per bucket and value of ``by``: cost, counterfactual and saving (dollars) and requests."""
        if by not in DIMENSIONS:
            raise ValueError(f"cannot split spend by {by!r} (one of {', '.join(DIMENSIONS)})")
        frame = self._usage(
            tr, filters, ("bucket_start", by), ("requests", "cost_micro_usd", "counterfactual_micro_usd")
        )
        frame = frame.rename(columns={"bucket_start": "bucket", by: "group"})
        frame["bucket"] = frame["bucket"].map(_aware)
        frame["group"] = frame["group"].replace("", "(none)")
        frame["cost_usd"] = usd(frame.pop("cost_micro_usd"))
        frame["counterfactual_usd"] = usd(frame.pop("counterfactual_micro_usd"))
        frame["saved_usd"] = frame["counterfactual_usd"] - frame["cost_usd"]
        return frame

    def breakdown(self, tr: TimeRange, filters: Filters | None = None, by: str = "model") -> pd.DataFrame:
        """Per value of ``by`` over the whole range: requests, cost, counterfactual and saving (dollars)."""
        if by not in DIMENSIONS:
            raise ValueError(f"cannot split spend by {by!r} (one of {', '.join(DIMENSIONS)})")
        frame = self._usage(tr, filters, (by,), ("requests", "cost_micro_usd", "counterfactual_micro_usd"))
        frame = frame.rename(columns={by: "group"})
        frame["group"] = frame["group"].replace("", "(none)")
        frame["cost_usd"] = usd(frame.pop("cost_micro_usd"))
        frame["counterfactual_usd"] = usd(frame.pop("counterfactual_micro_usd"))
        frame["saved_usd"] = frame["counterfactual_usd"] - frame["cost_usd"]
        return frame.sort_values("cost_usd", ascending=False, ignore_index=True)

    def token_series(self, tr: TimeRange, filters: Filters | None = None) -> pd.DataFrame:
        """Per bucket and token kind (input, cache write 5m / 1h, cache read, output): tokens."""
        frame = self._usage(tr, filters, ("bucket_start",), tuple(TOKEN_KINDS.values()))
        frame["bucket"] = frame.pop("bucket_start").map(_aware)
        long = frame.melt(id_vars="bucket", var_name="column", value_name="tokens")
        long["kind"] = long.pop("column").map({v: k for k, v in TOKEN_KINDS.items()})
        return long[["bucket", "kind", "tokens"]]

    # -- caches and savings ------------------------------------------------------------------------------

    def cache_summary(self, tr: TimeRange, filters: Filters | None = None) -> pd.DataFrame:
        """Hit rate of each cache: the prompt cache (share of prompt tokens read from cache, and of requests
        with a cache read) and every response cache recorded in ``cache_status`` (exact; semantic once built:
        a status containing "hit" is a hit, the other statuses but "bypass" count as eligible)."""
        frame = self._usage(tr, filters, ("cache_status",), ("requests", "cache_read_requests", *TOKEN_KINDS.values()))
        rows: list[dict[str, Any]] = []
        messages = frame[frame["cache_status"] != "bypass"] if len(frame) else frame
        prompt = float(messages[["input_tokens", "cache_read_input_tokens", "cache_write_5m_input_tokens",
                                 "cache_write_1h_input_tokens"]].to_numpy().sum()) if len(frame) else 0.0  # fmt: skip
        read = float(messages["cache_read_input_tokens"].sum()) if len(frame) else 0.0
        requests = int(frame["requests"].sum()) if len(frame) else 0
        if requests:
            rows.append({"cache": "prompt cache (tokens)", "hits": read, "eligible": prompt,
                         "hit_rate": read / prompt if prompt else 0.0})  # fmt: skip
            reads = int(frame["cache_read_requests"].sum())
            rows.append({"cache": "prompt cache (requests)", "hits": reads, "eligible": requests,
                         "hit_rate": reads / requests})  # fmt: skip
        statuses = {s: int(n) for s, n in zip(frame.get("cache_status", []), frame.get("requests", []), strict=False)}
        eligible = sum(n for s, n in statuses.items() if s and s != "bypass")
        for status, count in sorted(statuses.items()):
            if "hit" in status and eligible:
                rows.append(
                    {"cache": _cache_name(status), "hits": count, "eligible": eligible, "hit_rate": count / eligible}
                )
        return pd.DataFrame(rows, columns=["cache", "hits", "eligible", "hit_rate"])

    def cache_series(self, tr: TimeRange, filters: Filters | None = None) -> pd.DataFrame:
        """Per bucket: the prompt cache's token hit rate and each response cache's request hit rate."""
        frame = self._usage(tr, filters, ("bucket_start", "cache_status"), ("requests", *TOKEN_KINDS.values()))
        if not len(frame):
            return pd.DataFrame(columns=["bucket", "cache", "hit_rate"])
        frame["bucket"] = frame.pop("bucket_start").map(_aware)
        status = frame["cache_status"]
        prompt_cols = ["input_tokens", "cache_read_input_tokens", "cache_write_5m_input_tokens",
                       "cache_write_1h_input_tokens"]  # fmt: skip
        msgs = frame[status != "bypass"]
        prompt = msgs[prompt_cols].sum(axis=1).groupby(msgs["bucket"]).sum()
        read = msgs["cache_read_input_tokens"].groupby(msgs["bucket"]).sum()
        parts = [pd.DataFrame({"bucket": prompt.index, "cache": "prompt cache",
                               "hit_rate": (read / prompt).to_numpy()})[prompt.to_numpy() > 0]]  # fmt: skip
        eligible = frame[(status != "") & (status != "bypass")].groupby("bucket")["requests"].sum()
        hits = frame[status.str.contains("hit", regex=False)]
        if len(hits):
            rate = hits["requests"].to_numpy() / hits["bucket"].map(eligible).to_numpy()
            names = hits["cache_status"].map(_cache_name).to_numpy()
            parts.append(pd.DataFrame({"bucket": hits["bucket"].to_numpy(), "cache": names, "hit_rate": rate}))
        return pd.concat(parts, ignore_index=True).sort_values(["bucket", "cache"], ignore_index=True)

    def savings_by_stage(self, tr: TimeRange, filters: Filters | None = None) -> pd.DataFrame:
        """Per optimization: dollars saved against the counterfactual, and the requests it saved on."""
        t = savings_table
        stmt = (
            select(t.c.stage, _sum(t, "micro_usd"), _sum(t, "requests"))
            .where(self._where(t, tr, filters))
            .group_by(t.c.stage)
            .order_by(_total(t.c.micro_usd).desc())
        )
        frame = self._frame(stmt, ["stage", "micro_usd", "requests"])
        frame["saved_usd"] = usd(frame.pop("micro_usd"))
        return frame[["stage", "saved_usd", "requests"]]

    def savings_series(self, tr: TimeRange, filters: Filters | None = None) -> pd.DataFrame:
        t = savings_table
        stmt = (
            select(t.c.bucket_start, t.c.stage, _sum(t, "micro_usd"))
            .where(self._where(t, tr, filters))
            .group_by(t.c.bucket_start, t.c.stage)
            .order_by(t.c.bucket_start)
        )
        frame = self._frame(stmt, ["bucket", "stage", "micro_usd"])
        frame["bucket"] = frame["bucket"].map(_aware)
        frame["saved_usd"] = usd(frame.pop("micro_usd"))
        return frame

    def cohorts(self, tr: TimeRange, filters: Filters | None = None) -> pd.DataFrame:
        """Holdout against treated traffic (rows carrying the ``cohort`` label): per cohort, cost per request
        with a 95 % confidence interval (normal approximation), tokens per request, mean latency, error rate.
        Empty when no row carries a cohort (flags not in use)."""
        measures = ("requests", "errors", "cost_micro_usd", "cost_sq_sum", "latency_ms_sum", *TOKEN_KINDS.values())
        frame = self._usage(tr, filters, ("cohort",), measures)
        frame = frame[frame["cohort"] != ""] if len(frame) else frame
        rows = []
        for _, r in frame.iterrows():
            n = float(r["requests"])
            if n <= 0:
                continue
            mean = float(r["cost_micro_usd"]) / n
            var = max(float(r["cost_sq_sum"]) / n - mean * mean, 0.0) * (n / (n - 1) if n > 1 else 0.0)
            rows.append({
                "cohort": r["cohort"], "requests": int(n), "cost_per_request_usd": usd(mean),
                "ci95_usd": usd(1.96 * math.sqrt(var / n)),
                "tokens_per_request": float(sum(r[c] for c in TOKEN_KINDS.values())) / n,
                "mean_latency_ms": float(r["latency_ms_sum"]) / n, "error_rate": float(r["errors"]) / n,
            })  # fmt: skip
        return pd.DataFrame(rows, columns=["cohort", "requests", "cost_per_request_usd", "ci95_usd",
                                           "tokens_per_request", "mean_latency_ms", "error_rate"])  # fmt: skip

    # -- latency and errors ------------------------------------------------------------------------------

    def latency(self, tr: TimeRange, filters: Filters | None = None, by: str = "model") -> pd.DataFrame:
        """Per value of ``by`` (messages endpoint): requests, p50 / p90 / p99 (from the histogram) and mean, in ms."""
        frame = self._usage(tr, filters, (by, "endpoint"), ("requests", "latency_ms_sum", *LATENCY_COLUMNS))
        frame = frame[frame["endpoint"] == "messages"] if len(frame) else frame
        rows = []
        for value, group in frame.groupby(by) if len(frame) else []:
            counts = group[list(LATENCY_COLUMNS)].sum().tolist()
            n = float(group["requests"].sum())
            rows.append({
                "group": value or "(none)", "requests": int(n),
                "p50_ms": percentile_from_histogram(counts, 0.50), "p90_ms": percentile_from_histogram(counts, 0.90),
                "p99_ms": percentile_from_histogram(counts, 0.99),
                "mean_ms": float(group["latency_ms_sum"].sum()) / n if n else None,
            })  # fmt: skip
        return pd.DataFrame(rows, columns=["group", "requests", "p50_ms", "p90_ms", "p99_ms", "mean_ms"])

    def latency_series(self, tr: TimeRange, filters: Filters | None = None) -> pd.DataFrame:
        """Per bucket: p50 / p95 / p99 latency of the messages endpoint (long form: bucket, percentile, ms)."""
        flt = filters or Filters()
        t = usage_table
        stmt = (
            select(t.c.bucket_start, *(_sum(t, c) for c in LATENCY_COLUMNS))
            .where(self._where(t, tr, flt), t.c.endpoint == "messages")
            .group_by(t.c.bucket_start)
            .order_by(t.c.bucket_start)
        )
        frame = self._frame(stmt, ["bucket", *LATENCY_COLUMNS])
        if frame.empty:
            return pd.DataFrame(columns=["bucket", "percentile", "latency_ms"])
        counts = frame[list(LATENCY_COLUMNS)].to_numpy()
        buckets = frame["bucket"].map(_aware)
        parts = [
            pd.DataFrame({"bucket": buckets, "percentile": name, "latency_ms": percentiles_from_histograms(counts, q)})
            for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
        ]
        return pd.concat(parts, ignore_index=True)

    def error_series(self, tr: TimeRange, filters: Filters | None = None) -> pd.DataFrame:
        """Per bucket and error type: errors, and the bucket's error rate."""
        frame = self._usage(tr, filters, ("bucket_start", "error_type"), ("requests", "errors"))
        if not len(frame):
            return pd.DataFrame(columns=["bucket", "error_type", "errors", "requests", "error_rate"])
        frame["bucket"] = frame.pop("bucket_start").map(_aware)
        totals = frame.groupby("bucket")["requests"].sum()
        frame["requests"] = frame["bucket"].map(totals)
        frame["error_rate"] = frame["errors"] / frame["requests"]
        frame["error_type"] = frame["error_type"].replace("", "(no error)")
        return frame[["bucket", "error_type", "errors", "requests", "error_rate"]]

    def performance(self, tr: TimeRange) -> dict[str, Any]:
        """Figures for ``validate-performance``: requests, errors, cost, the messages endpoint's latency
        histogram and time-to-first-token sums, and the busiest hour's request count (hourly grain)."""
        frame = self._usage(tr, None, ("endpoint",), ("requests", "errors", "cost_micro_usd", "ttft_ms_sum",
                                                      "ttft_count", *LATENCY_COLUMNS))  # fmt: skip
        messages = frame[frame["endpoint"] == "messages"] if len(frame) else frame
        t = usage_table
        start, end = tr.bounds()
        per_hour = (
            select(_total(t.c.requests).label("n"))
            .where(t.c.period == "hour", t.c.bucket_start >= start.replace(minute=0, second=0, microsecond=0),
                   t.c.bucket_start < end)
            .group_by(t.c.bucket_start)
            .order_by(_total(t.c.requests).desc())
            .limit(1)
        )  # fmt: skip
        with self.engine.connect() as conn:
            peak = conn.execute(per_hour).scalar()
        return {
            "requests": int(frame["requests"].sum()) if len(frame) else 0,
            "errors": int(frame["errors"].sum()) if len(frame) else 0,
            "cost_micro_usd": int(frame["cost_micro_usd"].sum()) if len(frame) else 0,
            "messages": int(messages["requests"].sum()) if len(messages) else 0,
            "latency_histogram": [int(messages[c].sum()) if len(messages) else 0 for c in LATENCY_COLUMNS],
            "ttft_ms_sum": float(messages["ttft_ms_sum"].sum()) if len(messages) else 0.0,
            "ttft_count": int(messages["ttft_count"].sum()) if len(messages) else 0,
            "peak_hour_requests": int(peak or 0),
        }

    # -- the largest spenders ----------------------------------------------------------------------------

    @staticmethod
    def entity_period(tr: TimeRange) -> str:
        """The entity rollup's grain for ``tr``: days up to ``ENTITY_DAILY_MAX``, whole weeks (Monday, UTC) beyond."""
        return "day" if tr.end - tr.start <= ENTITY_DAILY_MAX else "week"

    @staticmethod
    def _entity_span(tr: TimeRange, period: str) -> tuple[datetime, datetime]:
        """The entity buckets ``tr`` covers at ``period``: starts in ``[first, end)``, ``first`` the day (or the
        Monday) holding ``tr.start``."""
        start, end = tr.bounds()
        first = start.replace(hour=0, minute=0, second=0, microsecond=0)
        if period == "week":
            first -= timedelta(days=first.weekday())
        return first, end

    def _entity_where(self, tr: TimeRange, kind: str, filters: Filters | None, period: str | None = None) -> Any:
        t = entity_table
        period = period or self.entity_period(tr)
        first, end = self._entity_span(tr, period)
        return and_(t.c.period == period, t.c.kind == kind, t.c.bucket_start >= first, t.c.bucket_start < end,
                    *(filters or Filters()).clauses(t))  # fmt: skip

    def top_entities(self, tr: TimeRange, kind: str, filters: Filters | None = None, limit: int = 10) -> pd.DataFrame:
        """The ``limit`` users / conversations / agents that spent most in the range (daily grain, weekly past
        ``ENTITY_DAILY_MAX``), with their spend in the range's first and second half (the trend). Of the
        filters, only keys apply (the entity rollup is kept per key only: see ``clawback.storage.rollup_models``).

        The ranking is exactly that of ``GROUP BY value ORDER BY sum(cost) DESC, value`` over the range's
        entity rows (``_top_by_group``), found without grouping them all when the entity totals allow (across
        keys, or per key under a key filter): see ``_top_candidates``."""
        if kind not in ENTITY_KINDS:
            raise ValueError(f"unknown entity kind {kind!r} (one of {', '.join(ENTITY_KINDS)})")
        flt = filters or Filters()
        walk = self._has_entity_totals()
        with self._snapshot() as conn:
            values = self._top_candidates(conn, tr, kind, limit, flt.keys) if walk else None
            if values is None:
                values = self._top_by_group(conn, tr, kind, flt, limit)
            sums = self._entity_sums(conn, tr, kind, values, flt)
        ranked = sorted(sums.items(), key=lambda kv: (-kv[1][3], kv[0]))[:limit]
        column = {name: np.array([m[i] for _, m in ranked], dtype="int64") for i, name in enumerate(_SUMS)}
        return pd.DataFrame({
            "value": [value for value, _ in ranked], "requests": column["requests"], "errors": column["errors"],
            "tokens": column["tokens"], "cost_usd": usd(column["cost"]),
            "saved_usd": usd(column["counterfactual"]) - usd(column["cost"]),
            "first_half_usd": usd(column["first_half"]), "second_half_usd": usd(column["second_half"]),
        })  # fmt: skip

    def _has_entity_totals(self) -> bool:
        """Whether the ledger has the entity totals (migration 0007; a ledger not yet migrated is grouped)."""
        if not self._entity_totals:
            self._entity_totals = {entity_total_table.name, entity_key_total_table.name} <= self.tables()
        return self._entity_totals

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """One connection whose reads all see one state of the ledger (the bound, the sums and the ranking
        must agree while the writer keeps writing): REPEATABLE READ on PostgreSQL, one read transaction on
        SQLite (WAL: a snapshot from its first read)."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN")
                yield conn
            else:
                yield conn.execution_options(isolation_level="REPEATABLE READ")

    #: Most candidates ``_top_candidates`` hands over (their sums are index lookups); past it, the GROUP BY.
    CANDIDATE_BUDGET = 1000

    def _top_candidates(
        self, conn: Connection, tr: TimeRange, kind: str, limit: int, keys: tuple[str, ...] = ()
    ) -> list[str] | None:
        """The values among which the ``limit`` largest spenders of ``tr`` are, or None when they are too many.

        Exact, by a bound: an entity's spend over any set of buckets is at most its ``cost_bound_micro_usd``
        (the sum of its non-negative costs, ``ledger_rollup_entity_total``), and only entities last seen on or
        after the range's first bucket (first seen before its last) can have rows in it. Read the ``4 x limit``
        (at least 64) such entities of largest bound: if that is all of them, they are the candidates.
        Otherwise their exact sums over the range give ``c``, the ``limit``-th largest (0 with fewer); every
        entity not read has a bound no larger than the last one read, so when that bound is below ``c``
        none of them can enter the top, nor tie (ties are broken by value): the candidates are those read.
        Otherwise only entities whose bound is at least ``c`` can reach ``c`` (and at least ``limit`` do):
        they are the candidates when there are at most ``CANDIDATE_BUDGET``; past that, None (the caller
        groups the whole range, which then costs about as much as their sums would). Short-lived entities
        (conversations) settle in the first read whatever the range; a few hundred agents are all
        candidates; long-lived users over a range shorter than their history (7 of 30 days) are grouped.

        Under a filter of ``n`` keys the walk reads the per-key totals of those keys instead: an entity none
        of whose rows was read has at most ``n`` of them, each bounded by the last one read, so the tests
        become ``n`` x that bound below ``c``, then a bound of at least ``c / n`` for the candidates.
        """
        t = entity_key_total_table if keys else entity_total_table
        n = len(set(keys)) or 1
        period = self.entity_period(tr)
        first, end = self._entity_span(tr, period)
        # A week bucket before ``end`` holds days up to 6 later: an entity first seen then still has rows in it.
        last_first_day = end + (timedelta(days=6) if period == "week" else timedelta(0))
        seen = and_(t.c.kind == kind, t.c.last_day >= first, t.c.first_day < last_first_day,
                    *([t.c.key_id.in_(keys)] if keys else []))  # fmt: skip
        batch = max(4 * limit, 64)
        stmt = (
            select(t.c.value, t.c.cost_bound_micro_usd)
            .where(seen)
            .order_by(t.c.cost_bound_micro_usd.desc())
            .limit(batch)
        )
        head = conn.execute(stmt).all()
        read = list(dict.fromkeys(v for v, _ in head))  # a value once, whatever its keys
        if len(head) < batch:  # every entity seen in the range was read
            return read
        sums = self._entity_sums(conn, tr, kind, read, Filters(keys=keys), halves=False)
        costs = sorted((m[3] for m in sums.values()), reverse=True)
        threshold = costs[limit - 1] if len(costs) >= limit else 0
        if n * head[-1][1] < threshold:
            return read
        least = -(-threshold // n)  # ceil: an integer bound b has n * b >= threshold exactly when b >= this
        more = (
            select(t.c.value).where(seen, t.c.cost_bound_micro_usd >= least).distinct().limit(self.CANDIDATE_BUDGET + 1)
        )
        rest = [v for (v,) in conn.execute(more)]
        return rest if len(rest) <= self.CANDIDATE_BUDGET else None

    def _top_by_group(self, conn: Connection, tr: TimeRange, kind: str, filters: Filters, limit: int) -> list[str]:
        """The ``limit`` largest spenders of the range by grouping all of its entity rows (the reference)."""
        t = entity_table
        cost = _total(t.c.cost_micro_usd)
        stmt = (
            select(t.c.value)
            .where(self._entity_where(tr, kind, filters))
            .group_by(t.c.value)
            .order_by(cost.desc(), t.c.value)
            .limit(limit)
        )
        return [v for (v,) in conn.execute(stmt)]

    def _entity_sums(
        self,
        conn: Connection,
        tr: TimeRange,
        kind: str,
        values: Sequence[str],
        filters: Filters,
        *,
        halves: bool = True,
    ) -> dict[str, list[int]]:
        """Exact sums over the range's entity rows of ``values`` (an index lookup each), grouped in the
        database: value -> [requests, errors, tokens, cost, counterfactual, first-half cost, second-half
        cost] (``_SUMS``). Values without a row in the range are absent, as they are from a GROUP BY. The
        halves are ``tr.halves()`` at ``tr``'s grain, as ``_entity_where`` bounds them (0 without ``halves``)."""
        if not values:
            return {}
        t = entity_table
        period = self.entity_period(tr)
        first_half, second_half = tr.halves()
        second_first, _ = self._entity_span(second_half, period)
        zero = literal(0, BigInteger)
        if halves:
            split = (
                _total(case((t.c.bucket_start < first_half.end, t.c.cost_micro_usd), else_=zero)),
                _total(case((t.c.bucket_start >= second_first, t.c.cost_micro_usd), else_=zero)),
            )
        else:
            split = (zero, zero)
        stmt = (
            select(t.c.value, _total(t.c.requests), _total(t.c.errors), _total(t.c.tokens),
                   _total(t.c.cost_micro_usd), _total(t.c.counterfactual_micro_usd), *split)
            .where(self._entity_where(tr, kind, filters), t.c.value.in_(list(values)))
            .group_by(t.c.value)
        )  # fmt: skip
        return {value: [int(x) for x in rest] for value, *rest in conn.execute(stmt)}

    def entity_series(
        self, tr: TimeRange, kind: str, values: Sequence[str], filters: Filters | None = None
    ) -> pd.DataFrame:
        """Daily spend of the given users / conversations / agents."""
        t = entity_table
        stmt = (
            select(t.c.bucket_start, t.c.value, _total(t.c.cost_micro_usd))
            .where(self._entity_where(tr, kind, filters), t.c.value.in_(list(values)))
            .group_by(t.c.bucket_start, t.c.value)
            .order_by(t.c.bucket_start)
        )
        frame = self._frame(stmt, ["bucket", "value", "micro"])
        frame["bucket"] = frame["bucket"].map(_aware)
        frame["cost_usd"] = usd(frame.pop("micro"))
        return frame

    def daily_spend(self, tr: TimeRange, filters: Filters | None = None) -> pd.DataFrame:
        """Spend per UTC day (daily grain whatever the range): the basis of anomaly detection."""
        t = usage_table
        start, end = tr.bounds()
        stmt = (
            select(t.c.bucket_start, _sum(t, "cost_micro_usd"), _sum(t, "requests"))
            .where(t.c.period == "day", t.c.bucket_start >= start.replace(hour=0, minute=0, second=0, microsecond=0),
                   t.c.bucket_start < end, *(filters or Filters()).clauses(t))
            .group_by(t.c.bucket_start)
            .order_by(t.c.bucket_start)
        )  # fmt: skip
        frame = self._frame(stmt, ["day", "cost_micro_usd", "requests"])
        frame["day"] = frame["day"].map(_aware)
        return frame

    # -- sections of other components, shown when their tables exist -------------------------------------

    def component_tables(self, prefixes: Sequence[str]) -> dict[str, pd.DataFrame]:
        """Up to 500 rows of each table whose name starts with one of ``prefixes`` (budgets, flags, ...): the
        dashboard shows budgets and rollout state once the components that own them have rows there."""
        out: dict[str, pd.DataFrame] = {}
        for name in sorted(self.tables()):
            if name.startswith(tuple(prefixes)):
                with self.engine.connect() as conn:
                    result = conn.execute(text(f'SELECT * FROM "{name}" LIMIT 500'))
                    rows = result.all()
                if rows:  # an empty table (the schema is there, nothing defined yet) is no section
                    out[name] = pd.DataFrame(rows, columns=list(result.keys()))
        return out


#: What ``LedgerQueries._entity_sums`` sums per entity, in order.
_SUMS = ("requests", "errors", "tokens", "cost", "counterfactual", "first_half", "second_half")


def _cache_name(status: str) -> str:
    """``hit`` is the exact cache's; another cache's hit status names it (``semantic-hit`` -> semantic cache)."""
    if status == "hit":
        return "exact cache"
    return status.replace("-hit", "").replace("_hit", "").replace("hit", "").strip("-_ ") + " cache"


def _aware(value: Any) -> datetime:
    """Rollup bucket starts, timezone-aware UTC whatever the driver handed back."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    stamp: datetime = value
    return stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp.astimezone(UTC)
