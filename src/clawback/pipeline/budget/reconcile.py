"""Counters against the ledger: what each budget's counter says was spent this window, and what the ledger
booked for the same scope and window.

They should agree to the micro-dollar: the stage settles each reservation to exactly the cost the ledger
stage books (``booked_cost``). Drift means something got past one and not the other: a settle lost while the
counter store was down, a crash between the two writes, ledger rows not yet flushed (transient, a few hundred
ms), or spend from before the budget existed. It is reported (``/metrics``, ``clawback budgets show``), never
silently "corrected": a correction racing in-flight settles would itself be a source of drift.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Engine, Table, and_, func, select

from clawback.pipeline.budget.plan import LEDGER_COLUMNS
from clawback.pipeline.budget.windows import Window
from clawback.storage.budgets import Budget
from clawback.storage.ledger_models import LedgerRow

__all__ = ["LONGEST_REQUEST", "LedgerSpend", "ledger_spend"]

#: The upstream read timeout's default (600 s) with room to spare.
LONGEST_REQUEST = timedelta(hours=1)

_ledger = cast(Table, LedgerRow.__table__)
_TOKENS = (
    _ledger.c.input_tokens
    + _ledger.c.output_tokens
    + _ledger.c.cache_read_input_tokens
    + _ledger.c.cache_write_5m_input_tokens
    + _ledger.c.cache_write_1h_input_tokens
)


@dataclass(frozen=True, slots=True)
class LedgerSpend:
    value: str
    micro_usd: int
    tokens: int


def ledger_spend(engine: Engine, budget: Budget, window: Window, now: datetime,
                 values: Sequence[str] = ()) -> list[LedgerSpend]:  # fmt: skip
    """Spend per scope value in ``window`` up to ``now``, by the time each request finished (when it settled).

    For a ``*`` budget, the values seen in the ledger plus ``values`` (those the caller knows of); otherwise
    the budget's one value.
    """
    # started_at bounds the scan (it is the ledger's one time index); finished_at decides, as the counter settles
    # when a request finishes. A request running longer than LONGEST_REQUEST across the window's start is missed.
    where: list[Any] = [_ledger.c.endpoint == "messages", _ledger.c.started_at >= window.start - LONGEST_REQUEST,
                        _ledger.c.finished_at >= window.start, _ledger.c.finished_at <= now]  # fmt: skip
    cost = func.coalesce(func.sum(_ledger.c.cost_micro_usd), 0)
    tokens = func.coalesce(func.sum(_TOKENS), 0)
    with engine.connect() as conn:
        if budget.scope == "org":
            row = conn.execute(select(cost, tokens).where(and_(*where))).one()
            return [LedgerSpend("org", int(row[0]), int(row[1]))]
        column = _ledger.c[LEDGER_COLUMNS[budget.scope]]
        if budget.scope_value != "*":
            row = conn.execute(select(cost, tokens).where(and_(*where, column == budget.scope_value))).one()
            return [LedgerSpend(str(budget.scope_value), int(row[0]), int(row[1]))]
        found = {
            str(value): LedgerSpend(str(value), int(c), int(t))
            for value, c, t in conn.execute(
                select(column, cost, tokens).where(and_(*where, column.is_not(None))).group_by(column)
            )
        }
    for value in values:
        found.setdefault(value, LedgerSpend(value, 0, 0))
    return sorted(found.values(), key=lambda s: s.value)
