"""The one place where the order of the stages is declared.

The order (``docs/architecture.md``): ledger (outermost: it sees what the caller sent and got) → flags → budget → exact
cache → semantic cache → pruning → prompt-cache planner → coalesce → dispatch (the terminal upstream call).
Built today: ledger, budget, exact cache, pruning, prompt-cache planner (its cache-aware fan-out is the
coalescing of requests that share a new prefix), coalesce (identical requests in flight share one call), dispatch
(limits, retries, breaker, fair sharing); flags and semantic cache come with their own issues.
"""

from __future__ import annotations

from sqlalchemy import Engine

from clawback.config import Settings
from clawback.pipeline.budget import BudgetStage
from clawback.pipeline.coalesce import CoalesceStage
from clawback.pipeline.dispatch import DispatchStage
from clawback.pipeline.exact_cache import ExactCacheStage
from clawback.pipeline.ledger import LedgerStage, RecordSink
from clawback.pipeline.prompt_cache import PromptCachePlanner
from clawback.pipeline.pruning import PruningStage
from clawback.pipeline.stage import CallNext, Pipeline, Stage
from clawback.pricing import PriceBook

__all__ = ["build_pipeline"]


def build_pipeline(
    settings: Settings,
    *,
    price_book: PriceBook,
    sinks: list[RecordSink],
    terminal: CallNext,
    engine: Engine | None = None,
) -> Pipeline:
    """``engine``: the process's pool for the ledger database, for stages that read it (else each opens its own)."""
    stages: list[Stage] = [LedgerStage(price_book, sinks)]
    if settings.budgets.enforce:  # right inside the ledger (it records the decision), outside the caches
        stages.append(BudgetStage(settings.budgets, price_book, engine or settings.ledger.url))
    if settings.exact_cache.enabled:  # after flags and budget, before semantic cache and pruning
        stages.append(ExactCacheStage(settings.exact_cache, price_book))
    if settings.pruning.enabled or settings.pruning.overrides:  # after the caches, before the planner
        stages.append(PruningStage(settings.pruning, price_book))
    if settings.prompt_cache.enabled:  # after pruning (it plans the pruned body), before coalesce
        stages.append(PromptCachePlanner(settings.prompt_cache, price_book))
    if settings.coalesce.enabled:  # after the planner (identical planned requests), above dispatch
        stages.append(CoalesceStage(settings.coalesce, settings.exact_cache, price_book))
    if settings.dispatch.enabled:  # innermost: around the terminal upstream call
        stages.append(DispatchStage(settings.dispatch, price_book))
    return Pipeline(stages, terminal)  # binds each stage to the ones below it (``Stage.bind``)
