"""``clawback report``: what a day, week or month cost, what it would have cost, and where the savings came from.

Everything is read from the ledger's rollups through ``clawback.dashboard.data`` (so the report and the
dashboard cannot disagree), and every dollar is a ledger micro-dollar figure that ``clawback.pricing``
computed when the request was booked, turned into exact ``Decimal`` dollars by ``from_micro_usd``.

Anomalies: a day whose spend is above its usual range, the usual range being the median of the 14 days
before it plus three median absolute deviations (robust to the anomalies themselves), and at least 1.5x that
median (a flat history must not flag a cent's difference). A day with fewer than 7 days of history since the
ledger's first traffic is never flagged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

import pandas as pd

from clawback.dashboard.data import ENTITY_KINDS, LedgerQueries, TimeRange
from clawback.pricing import from_micro_usd

__all__ = ["PERIODS", "Anomaly", "PeriodReport", "Spender", "build_report", "find_anomalies"]

Period = Literal["day", "week", "month"]
PERIODS: dict[str, timedelta] = {"day": timedelta(days=1), "week": timedelta(days=7), "month": timedelta(days=30)}
#: Days of history an anomaly is judged against.
HISTORY_DAYS = 14
#: Days since the first traffic a day needs before it can be judged at all.
MIN_HISTORY_DAYS = 7


@dataclass(frozen=True, slots=True)
class Spender:
    kind: str  # key_id, team, feature, user, session, agent
    name: str
    cost: Decimal
    previous: Decimal  # the same spender's spend over the previous period (the trend)
    requests: int


@dataclass(frozen=True, slots=True)
class Anomaly:
    day: datetime
    cost: Decimal
    usual_max: Decimal
    median: Decimal


@dataclass
class PeriodReport:
    period: str
    range: TimeRange
    previous_range: TimeRange
    requests: int
    errors: int
    cost: Decimal
    counterfactual: Decimal
    previous_cost: Decimal
    savings_by_stage: dict[str, Decimal]
    spenders: list[Spender]
    caches: pd.DataFrame
    latency: pd.DataFrame
    anomalies: list[Anomaly]
    daily: pd.DataFrame
    spend_by_model: pd.DataFrame
    savings: pd.DataFrame
    cache_series: pd.DataFrame
    cohorts: pd.DataFrame
    budgets: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def saved(self) -> Decimal:
        return self.counterfactual - self.cost

    @property
    def saved_share(self) -> float:
        return float(self.saved / self.counterfactual) if self.counterfactual else 0.0


def find_anomalies(daily: pd.DataFrame, since: datetime) -> list[Anomaly]:
    """Days from ``since`` on whose spend is above the usual range of the ``HISTORY_DAYS`` days before them."""
    if daily.empty:
        return []
    spend = {
        pd.Timestamp(d).to_pydatetime(): int(c) for d, c in zip(daily["day"], daily["cost_micro_usd"], strict=True)
    }
    out: list[Anomaly] = []
    for day in sorted(spend):
        if day < since:
            continue
        first = min(spend)
        history = [spend.get(day - timedelta(days=i), 0) for i in range(1, HISTORY_DAYS + 1)
                   if day - timedelta(days=i) >= first]  # fmt: skip
        if len(history) < MIN_HISTORY_DAYS or not any(history):
            continue
        series = pd.Series(history, dtype="float64")
        median = float(series.median())
        mad = float((series - median).abs().median())
        usual_max = max(median + 3 * mad, 1.5 * median)
        if spend[day] > usual_max:
            out.append(Anomaly(day, from_micro_usd(spend[day]), from_micro_usd(round(usual_max)),
                               from_micro_usd(round(median))))  # fmt: skip
    return out


def build_report(queries: LedgerQueries, period: str = "week", now: datetime | None = None) -> PeriodReport:
    """The report of the ``period`` ending at ``now`` (default: the current time)."""
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r} (day, week or month)")
    end = (now or datetime.now(UTC)).astimezone(UTC)
    span = PERIODS[period]
    tr = TimeRange(end - span, end)
    prev = TimeRange(end - 2 * span, end - span)
    totals, before = queries.totals(tr), queries.totals(prev)
    savings = queries.savings_by_stage(tr)
    saved_by_stage = {
        stage: from_micro_usd(round(usd * 1_000_000))
        for stage, usd in zip(savings["stage"], savings["saved_usd"], strict=True)
    }
    spenders: list[Spender] = []
    for dim in ("key_id", "team", "feature"):
        now_frame, prev_frame = queries.breakdown(tr, by=dim), queries.breakdown(prev, by=dim)
        previous = dict(zip(prev_frame["group"], prev_frame["cost_usd"], strict=True))
        for _, row in now_frame.head(5).iterrows():
            spenders.append(Spender(dim, str(row["group"]), _dollars(row["cost_usd"]),
                                    _dollars(previous.get(row["group"], 0.0)), int(row["requests"])))  # fmt: skip
    for kind in ENTITY_KINDS:
        top = queries.top_entities(tr, kind, limit=5)
        if top.empty:
            continue
        earlier = queries.entity_series(prev, kind, top["value"].tolist()).groupby("value")["cost_usd"].sum()
        for _, row in top.iterrows():
            spenders.append(Spender(kind, str(row["value"]), _dollars(row["cost_usd"]),
                                    _dollars(float(earlier.get(row["value"], 0.0))), int(row["requests"])))  # fmt: skip
    history = TimeRange(tr.start - timedelta(days=HISTORY_DAYS), end)
    daily = queries.daily_spend(history)
    since = tr.start.replace(hour=0, minute=0, second=0, microsecond=0)
    budgets = queries.component_tables(("budget",))
    return PeriodReport(
        period=period, range=tr, previous_range=prev, requests=totals["requests"], errors=totals["errors"],
        cost=from_micro_usd(totals["cost_micro_usd"]),
        counterfactual=from_micro_usd(totals["counterfactual_micro_usd"]),
        previous_cost=from_micro_usd(before["cost_micro_usd"]), savings_by_stage=saved_by_stage, spenders=spenders,
        caches=queries.cache_summary(tr), latency=queries.latency(tr), anomalies=find_anomalies(daily, since),
        daily=daily, spend_by_model=queries.spend_series(tr, by="model"), savings=savings,
        cache_series=queries.cache_series(tr), cohorts=queries.cohorts(tr), budgets=budgets,
    )  # fmt: skip


def _dollars(value: float) -> Decimal:
    """A rollup dollar figure (a float of micro-dollars / 1e6) back to exact dollars."""
    return from_micro_usd(round(float(value) * 1_000_000))
