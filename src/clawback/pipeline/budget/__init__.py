"""Token budgets (issue 13): reserve the worst case before a call, settle to the booked cost after.

``stage.py`` is the pipeline stage; ``plan.py`` says which budgets apply and the worst case, ``windows.py``
which window a counter covers, ``alerts.py`` the soft thresholds and forecasts, ``reconcile.py`` the
comparison with the ledger. Counters: ``clawback.storage.budget_counters``; definitions, overrides and audit:
``clawback.storage.budgets``.
"""

from clawback.pipeline.budget.plan import worst_case
from clawback.pipeline.budget.stage import BudgetStage, counters_from_settings
from clawback.pipeline.budget.windows import Window, window_of

__all__ = ["BudgetStage", "Window", "counters_from_settings", "window_of", "worst_case"]
