"""Holdout against treated traffic: the measured saving, beside the counterfactual saving the stages book.

The ledger's savings are counterfactual estimates (what the caller's request would have cost, as each stage
prices it). The honest measure in production is a holdout: a slice of conversations that gets no optimization
(``flags.holdout_percent`` / the ``holdout`` flag; rows labelled ``cohort``), compared with the rest. This module
takes ledger rows and returns, per cohort, cost per request, tokens, latency and error rate with 95 % confidence
intervals, and the saving measured as ``1 - cost per treated request / cost per held-out request`` beside the
share the ledger books on the treated rows (``saved / counterfactual``).

Confidence intervals are cluster-robust: a conversation's requests are not independent samples (one long
conversation costs more on every turn), so each cohort's mean is a ratio estimator over conversations (the rows'
``bucket_id`` label, the flags stage's identity hash) with the usual linearised variance, and the saving's interval
comes from the two means' by the delta method. With few conversations the intervals are wide: that is the point
of showing them.

``compare_cohorts(records)`` is the function ``clawback report`` (issue 15) and the dashboard call; ``clawback bench
savings`` uses it for its holdout row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from clawback.pricing import usd
from clawback.storage.ledger import LedgerRecord

__all__ = ["CohortFigures", "Estimate", "HoldoutComparison", "compare_cohorts", "is_holdout"]

Z95 = 1.959964


def is_holdout(record: LedgerRecord) -> bool:
    return record.labels.get("cohort") == "holdout"


@dataclass(frozen=True, slots=True)
class Estimate:
    """A mean and the half-width of its 95 % confidence interval (``nan`` when it cannot be estimated)."""

    mean: float
    half_width: float

    def as_dict(self, digits: int = 6) -> dict[str, float | None]:
        def num(value: float) -> float | None:
            return None if math.isnan(value) else round(value, digits)

        return {"mean": num(self.mean), "ci95": num(self.half_width)}


def _ratio_estimate(rows: Sequence[LedgerRecord], value: Callable[[LedgerRecord], float]) -> tuple[float, float]:
    """Mean of ``value`` per request and its variance, clustered by conversation (``bucket_id``)."""
    clusters: dict[str, list[float]] = {}
    for row in rows:
        cluster = clusters.setdefault(row.labels.get("bucket_id") or row.request_id, [0.0, 0.0])
        cluster[0] += value(row)
        cluster[1] += 1
    total_y = sum(c[0] for c in clusters.values())
    total_n = sum(c[1] for c in clusters.values())
    k = len(clusters)
    if total_n == 0:
        return math.nan, math.nan
    mean = total_y / total_n
    if k < 2:
        return mean, math.nan
    spread = sum((y - mean * n) ** 2 for y, n in clusters.values())
    return mean, k / (k - 1) * spread / total_n**2


def _estimate(rows: Sequence[LedgerRecord], value: Callable[[LedgerRecord], float]) -> Estimate:
    mean, variance = _ratio_estimate(rows, value)
    return Estimate(mean, Z95 * math.sqrt(variance) if not math.isnan(variance) else math.nan)


@dataclass(frozen=True, slots=True)
class CohortFigures:
    requests: int
    conversations: int
    cost_micro_usd: int
    counterfactual_micro_usd: int
    cost_per_request_usd: Estimate
    input_tokens_per_request: Estimate
    output_tokens_per_request: Estimate
    latency_ms: Estimate
    error_rate: Estimate

    @classmethod
    def of(cls, rows: Sequence[LedgerRecord]) -> CohortFigures:
        return cls(
            requests=len(rows),
            conversations=len({r.labels.get("bucket_id") or r.request_id for r in rows}),
            cost_micro_usd=sum(r.cost_micro_usd for r in rows),
            counterfactual_micro_usd=sum(r.counterfactual_micro_usd for r in rows),
            cost_per_request_usd=_estimate(rows, lambda r: usd(r.cost_micro_usd)),
            input_tokens_per_request=_estimate(rows, lambda r: r.input_tokens + r.cache_read_input_tokens
                                               + r.cache_write_5m_input_tokens + r.cache_write_1h_input_tokens),
            output_tokens_per_request=_estimate(rows, lambda r: r.output_tokens),
            latency_ms=_estimate(rows, lambda r: r.latency_ms),
            error_rate=_estimate(rows, lambda r: 1.0 if r.status >= 400 else 0.0),
        )  # fmt: skip

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "conversations": self.conversations,
            "cost_usd": usd(self.cost_micro_usd),
            "cost_per_request_usd": self.cost_per_request_usd.as_dict(),
            "input_tokens_per_request": self.input_tokens_per_request.as_dict(1),
            "output_tokens_per_request": self.output_tokens_per_request.as_dict(1),
            "latency_ms": self.latency_ms.as_dict(2),
            "error_rate": self.error_rate.as_dict(4),
        }


@dataclass(frozen=True, slots=True)
class HoldoutComparison:
    treated: CohortFigures
    holdout: CohortFigures
    measured_saving: Estimate
    """``1 - cost per treated request / cost per held-out request``, with its 95 % interval."""
    booked_saving: float | None
    """The treated rows' ``(counterfactual - cost) / counterfactual``: what the stages say they saved."""

    @property
    def agrees(self) -> bool | None:
        """Whether the booked saving lies within the measured saving's 95 % interval (None: cannot tell)."""
        if self.booked_saving is None or math.isnan(self.measured_saving.half_width):
            return None
        return abs(self.booked_saving - self.measured_saving.mean) <= self.measured_saving.half_width

    def as_dict(self) -> dict[str, Any]:
        return {
            "treated": self.treated.as_dict(),
            "holdout": self.holdout.as_dict(),
            "measured_saving": self.measured_saving.as_dict(4),
            "booked_saving": None if self.booked_saving is None else round(self.booked_saving, 4),
            "agrees": self.agrees,
        }


def compare_cohorts(records: Iterable[LedgerRecord]) -> HoldoutComparison | None:
    """Treated against holdout over the ``messages`` rows of ``records``; None when either cohort is empty."""
    rows = [r for r in records if r.endpoint == "messages"]
    held = [r for r in rows if is_holdout(r)]
    treated = [r for r in rows if not is_holdout(r) and "cohort" in r.labels]
    if not held or not treated:
        return None
    mean_t, var_t = _ratio_estimate(treated, lambda r: float(r.cost_micro_usd))
    mean_h, var_h = _ratio_estimate(held, lambda r: float(r.cost_micro_usd))
    ratio = mean_t / mean_h if mean_h else math.nan
    if math.isnan(var_t) or math.isnan(var_h) or not mean_t or not mean_h:
        half = math.nan
    else:
        half = Z95 * abs(ratio) * math.sqrt(var_t / mean_t**2 + var_h / mean_h**2)
    counterfactual = sum(r.counterfactual_micro_usd for r in treated)
    booked = (counterfactual - sum(r.cost_micro_usd for r in treated)) / counterfactual if counterfactual else None
    return HoldoutComparison(CohortFigures.of(treated), CohortFigures.of(held), Estimate(1 - ratio, half), booked)
