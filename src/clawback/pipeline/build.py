"""The one place where the order of the stages is declared.

The order (DESIGN.md): ledger (outermost: it sees what the caller sent and got) → flags → budget → exact
cache → semantic cache → pruning → prompt-cache planner → coalesce → dispatch (the terminal upstream call).
Stages are added here as they are built; today the pipeline is the ledger around the upstream call.
"""

from __future__ import annotations

from clawback.config import Settings
from clawback.pipeline.ledger import LedgerStage, RecordSink
from clawback.pipeline.stage import CallNext, Pipeline, Stage
from clawback.pricing import PriceBook

__all__ = ["build_pipeline"]


def build_pipeline(
    settings: Settings, *, price_book: PriceBook, sinks: list[RecordSink], terminal: CallNext
) -> Pipeline:
    stages: list[Stage] = [LedgerStage(price_book, sinks)]
    return Pipeline(stages, terminal)
