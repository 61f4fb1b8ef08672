"""Which budgets a request falls under, and the most it can cost.

A budget applies through its scope: ``key`` (the clawback key), ``team``, ``user``, ``feature``,
``conversation`` (Claude Code's session id), or ``org`` (every request). ``scope_value`` ``*`` gives each key
/ team / ... a counter of its own. The worst case is the request's input tokens (estimated by
``clawback.tokens``, plus ``budgets.estimate_margin``) and its ``max_tokens``, priced by
``PriceBook.worst_case`` (cache-write premiums included), so a reservation never undershoots a bill whose
input the estimate got right.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from clawback.api.messages import MessagesRequest
from clawback.pipeline.budget.windows import Window
from clawback.pipeline.context import Tenant
from clawback.pricing import PriceBook
from clawback.storage.budgets import Budget
from clawback.tokens import count_request_tokens

__all__ = ["LEDGER_COLUMNS", "Applicable", "WorstCase", "counter_id", "scope_value_of", "worst_case"]

#: The ledger column each scope is read from (reconciliation); ``org`` reads every row.
LEDGER_COLUMNS = {"key": "key_id", "team": "team", "user": "user", "feature": "feature",
                  "conversation": "session_id"}  # fmt: skip


def scope_value_of(budget: Budget, tenant: Tenant) -> str | None:
    """The scope value this request is counted under for ``budget``, or None when the budget does not apply."""
    if budget.scope == "org":
        return "org"
    value = getattr(tenant, LEDGER_COLUMNS[budget.scope])
    if not value:
        return None
    return value if budget.scope_value in ("*", value) else None


def counter_id(budget: Budget, value: str) -> str:
    return f"{budget.id}:{value}"


@dataclass(frozen=True, slots=True)
class Applicable:
    budget: Budget
    value: str
    window: Window

    @property
    def cid(self) -> str:
        return counter_id(self.budget, self.value)


@dataclass(frozen=True, slots=True)
class WorstCase:
    micro_usd: int
    tokens: int
    input_tokens: int
    max_tokens: int


def worst_case(price_book: PriceBook, body: dict[str, Any], margin: float) -> WorstCase:
    request = MessagesRequest(body)
    estimated = math.ceil(count_request_tokens(body) * (1 + margin))
    max_tokens = request.max_tokens
    cost = price_book.worst_case(request.model, estimated, max_tokens, inference_geo=request.inference_geo,
                                 speed=request.speed)  # fmt: skip
    return WorstCase(cost.micro_usd, estimated + max_tokens, estimated, max_tokens)
