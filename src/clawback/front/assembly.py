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
from clawback.storage.flags import FlagStore
from clawback.storage.ledger import LedgerWriter
from clawback.storage.migrate import migrate

__all__ = ["Assembly", "assemble", "open_flags", "open_ledger"]


def open_ledger(settings: LedgerSettings, engine: Engine | None = None) -> LedgerWriter:
    """The ledger's writer, its database migrated to the current schema first; on ``engine`` (the process's
    pool, which the caller then owns and disposes) when given, else on an engine of its own."""
    migrate(settings.url)
    if engine is not None:
        return LedgerWriter.from_settings(settings, url=engine)
    return LedgerWriter.from_settings(settings)


def open_flags(settings: Settings, engine: Engine | None = None) -> FlagStore:
    """The flag store in the ledger's database (migrated by ``open_ledger``), loaded and watching for changes; on
    ``engine`` (the process's pool, so its connections count in ``ledger.pool_size``) when given."""
    flags = settings.flags
    store = FlagStore(engine or settings.ledger.url, refresh_s=flags.refresh_s, redis_url=flags.redis_url,
                      channel=flags.redis_channel)  # fmt: skip
    store.start()
    return store


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
    ``terminal``; every ledger record goes to the writer, then to ``sinks``. The flag store is opened here and closed
    by the pipeline (its flags stage). ``engine``: the process's pool for the ledger database (the gateway's), lent
    to the stages that read it."""
    price_book = price_book or load_price_book(settings.pricing)
    ledger = ledger or open_ledger(settings.ledger)
    pipeline = build_pipeline(settings, price_book=price_book, sinks=[ledger.submit, *sinks], terminal=terminal,
                              flags=open_flags(settings, engine), engine=engine)  # fmt: skip
    return Assembly(price_book, ledger, pipeline)
