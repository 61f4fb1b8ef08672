"""The one place where the order of the stages is declared.

The order (``docs/architecture.md``): ledger (outermost: it sees what the caller sent and got) → flags → budget → exact
cache → semantic cache → pruning → prompt-cache planner → coalesce → dispatch (the terminal upstream call).
Built today: ledger, flags, budget, exact cache, semantic cache, pruning, prompt-cache planner (its cache-aware
fan-out is the coalescing of requests that share a new prefix), coalesce (identical requests in flight share one
call), dispatch (limits, retries, breaker, fair sharing). The flags stage decides every flagged stage's mode below
it per request (``pipeline/flags.py``).
"""

from __future__ import annotations

from sqlalchemy import Engine

from clawback.config import Settings
from clawback.pipeline.budget import BudgetStage
from clawback.pipeline.coalesce import CoalesceStage
from clawback.pipeline.dispatch import DispatchStage
from clawback.pipeline.exact_cache import ExactCacheStage
from clawback.pipeline.flags import FlagsStage
from clawback.pipeline.ledger import LedgerStage, RecordSink
from clawback.pipeline.prompt_cache import PromptCachePlanner
from clawback.pipeline.pruning import PruningStage
from clawback.pipeline.semantic_cache import SemanticCacheStage
from clawback.pipeline.stage import CallNext, Pipeline, Stage
from clawback.pricing import PriceBook
from clawback.storage.flags import FlagStore

__all__ = ["build_pipeline"]


def build_pipeline(
    settings: Settings,
    *,
    price_book: PriceBook,
    sinks: list[RecordSink],
    terminal: CallNext,
    flags: FlagStore | None = None,
    engine: Engine | None = None,
) -> Pipeline:
    """The pipeline; ``flags``: the flag store the flags stage decides from (and closes), none: configured starts;
    ``engine``: the process's pool for the ledger database, for stages that read it (else each opens its own)."""
    stages: list[Stage] = [LedgerStage(price_book, sinks)]
    stages.append(FlagsStage(settings.flags, flags))  # right inside the ledger: every stage below runs as decided
    if settings.budgets.enforce:  # inside the ledger (it records the decision) and flags, outside the caches
        stages.append(BudgetStage(settings.budgets, price_book, engine or settings.ledger.url))
    if settings.exact_cache.enabled:  # after flags and budget, before semantic cache and pruning
        stages.append(ExactCacheStage(settings.exact_cache, price_book))
    if settings.semantic_cache.enabled:  # right after the exact cache: an identical request is never embedded
        stages.append(SemanticCacheStage(settings.semantic_cache, price_book))
    if settings.pruning.enabled or settings.pruning.shadow or settings.pruning.overrides:  # after the caches
        stages.append(PruningStage(settings.pruning, price_book))
    if settings.prompt_cache.enabled:  # after pruning (it plans the pruned body), before coalesce
        stages.append(PromptCachePlanner(settings.prompt_cache, price_book))
    if settings.coalesce.enabled:  # after the planner (identical planned requests), above dispatch
        stages.append(CoalesceStage(settings.coalesce, settings.exact_cache, price_book))
    if settings.dispatch.enabled:  # innermost: around the terminal upstream call
        stages.append(DispatchStage(settings.dispatch, price_book))
    return Pipeline(stages, terminal)  # binds each stage to the ones below it (``Stage.bind``)
