"""Building what serves requests from ``Settings``, the same for both front doors.

The ledger is migrated and opened here, the price book loaded, and the pipeline built (``pipeline/build.py``
keeps the stage order; each stage builds its own store from its settings). What differs between the doors is
passed in: the terminal call (the gateway has one upstream pool; the wrapper one per event loop), extra record
sinks (the gateway's metrics) and whether the ledger writer is shared (the wrapper shares one per database).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine

from clawback.config import LedgerSettings, Settings
from clawback.pipeline.build import build_pipeline
from clawback.pipeline.ledger import RecordSink
from clawback.pipeline.stage import CallNext, Pipeline
from clawback.pricing import PriceBook, load_price_book
from clawback.storage.ledger import LedgerWriter
from clawback.storage.migrate import migrate

__all__ = ["Assembly", "assemble", "open_ledger"]


def open_ledger(settings: LedgerSettings, engine: Engine | None = None) -> LedgerWriter:
    """The ledger's writer, its database migrated to the current schema first; on ``engine`` (the process's
    pool, which the caller then owns and disposes) when given, else on an engine of its own."""
    migrate(settings.url)
    if engine is not None:
        return LedgerWriter.from_settings(settings, url=engine)
    return LedgerWriter.from_settings(settings)


@dataclass(frozen=True, slots=True)
class Assembly:
    price_book: PriceBook
    ledger: LedgerWriter
    pipeline: Pipeline


def assemble(
    settings: Settings,
    *,
    terminal: CallNext,
    ledger: LedgerWriter | None = None,
    sinks: Sequence[RecordSink] = (),
    price_book: PriceBook | None = None,
    engine: Engine | None = None,
) -> Assembly:
    """The price book, the ledger (``ledger``, else one opened from ``settings.ledger``) and the pipeline ending in
    ``terminal``; every ledger record goes to the writer, then to ``sinks``. ``engine``: the process's pool for
    the ledger database (the gateway's), lent to the stages that read it."""
    price_book = price_book or load_price_book(settings.pricing)
    ledger = ledger or open_ledger(settings.ledger)
    pipeline = build_pipeline(
        settings, price_book=price_book, sinks=[ledger.submit, *sinks], terminal=terminal, engine=engine
    )
    return Assembly(price_book, ledger, pipeline)
