"""``clawback validate-performance``: a period's latency, throughput and cost per request against a baseline.

The figures come from the rollups (``LedgerQueries.performance``): latency percentiles of the messages endpoint
read off the rollup histogram (within one bucket, edges about x1.6 apart), mean time to first token, requests
per hour (average over the period and the busiest hour), error rate, and cost per request in micro-dollars
(the ledger's own figures, from ``clawback.pricing``).

A regression is a figure worse than the baseline beyond its tolerance (``TOLERANCES``): latency and TTFT more
than 20 % higher (and at least 5 ms, so a 1 ms -> 2 ms wobble on a fast path is not one), cost per request
more than 10 % higher, error rate more than 1 point higher, throughput more than 20 % lower.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from clawback.dashboard.data import LedgerQueries, TimeRange, percentile_from_histogram
from clawback.reports.period import PERIODS

__all__ = ["TOLERANCES", "PerformanceFigures", "compare", "measure"]


@dataclass(frozen=True, slots=True)
class PerformanceFigures:
    period: str
    start: str
    end: str
    requests: int
    requests_per_hour: float
    peak_hour_requests: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    latency_p99_ms: float | None
    ttft_mean_ms: float | None
    error_rate: float | None
    cost_per_request_micro_usd: float | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


#: figure -> (direction a regression goes, relative tolerance, absolute tolerance)
TOLERANCES: dict[str, tuple[str, float, float]] = {
    "latency_p50_ms": ("up", 0.20, 5.0),
    "latency_p95_ms": ("up", 0.20, 5.0),
    "latency_p99_ms": ("up", 0.20, 5.0),
    "ttft_mean_ms": ("up", 0.20, 5.0),
    "cost_per_request_micro_usd": ("up", 0.10, 0.0),
    "error_rate": ("up", 0.0, 0.01),
    "requests_per_hour": ("down", 0.20, 0.0),
}


def measure(queries: LedgerQueries, period: str = "week", now: datetime | None = None) -> PerformanceFigures:
    if period not in PERIODS:
        raise ValueError(f"unknown period {period!r} (day, week or month)")
    end = (now or datetime.now(UTC)).astimezone(UTC)
    tr = TimeRange(end - PERIODS[period], end)
    raw = queries.performance(tr)
    hist = raw["latency_histogram"]
    n = raw["requests"]
    hours = (tr.end - tr.start).total_seconds() / 3600
    return PerformanceFigures(
        period=period, start=tr.start.isoformat(), end=tr.end.isoformat(), requests=n,
        requests_per_hour=round(n / hours, 3), peak_hour_requests=raw["peak_hour_requests"],
        latency_p50_ms=percentile_from_histogram(hist, 0.50), latency_p95_ms=percentile_from_histogram(hist, 0.95),
        latency_p99_ms=percentile_from_histogram(hist, 0.99),
        ttft_mean_ms=raw["ttft_ms_sum"] / raw["ttft_count"] if raw["ttft_count"] else None,
        error_rate=raw["errors"] / n if n else None,
        cost_per_request_micro_usd=raw["cost_micro_usd"] / raw["messages"] if raw["messages"] else None,
    )  # fmt: skip


def compare(current: PerformanceFigures, baseline: dict[str, Any]) -> dict[str, Any]:
    """Each figure against the baseline's: the change, and whether it is a regression (see ``TOLERANCES``)."""
    now = current.to_json()
    rows: list[dict[str, Any]] = []
    regressions: list[str] = []
    for name, (direction, rel, absolute) in TOLERANCES.items():
        old, new = baseline.get(name), now.get(name)
        if old is None or new is None:
            rows.append({"name": name, "baseline": old, "current": new, "change": "-", "regression": False})
            continue
        old, new = float(old), float(new)
        delta = new - old
        change = f"{delta / old:+.1%}" if old else f"{delta:+.4g}"
        if direction == "up":
            bad = delta > max(old * rel, absolute) if rel else delta > absolute
        else:
            bad = new < old * (1 - rel)
        rows.append({"name": name, "baseline": old, "current": new, "change": change, "regression": bad})
        if bad:
            regressions.append(f"{name} {old:,.4g} -> {new:,.4g} ({change})")
    return {"period": now["period"], "start": now["start"], "end": now["end"], "figures": rows,
            "regressions": regressions}  # fmt: skip
