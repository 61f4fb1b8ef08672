"""Storage: the request ledger (SQLite embedded, PostgreSQL when scaled out) and its migrations.

Public API::

    migrate(url)                                   # Alembic upgrade head, programmatic
    writer = LedgerWriter.from_settings(settings.ledger)
    writer.open() / await writer.start()           # background thread; replays the journal
    writer.submit(LedgerRecord(...))               # non-blocking, thread-safe, never drops
    writer.close() / await writer.aclose()         # flushes everything
    writer.stats()                                 # counters for /metrics and health
    LedgerReader(url).rows() / .get(id) / .totals()
"""

from clawback.storage.engine import make_engine
from clawback.storage.journal import Journal
from clawback.storage.ledger import (
    Endpoint,
    LedgerReader,
    LedgerRecord,
    LedgerStats,
    LedgerWriter,
)
from clawback.storage.ledger_models import Base, LedgerRow
from clawback.storage.migrate import current_revision, head_revision, migrate, migrate_engine

__all__ = [
    "Base",
    "Endpoint",
    "Journal",
    "LedgerReader",
    "LedgerRecord",
    "LedgerRow",
    "LedgerStats",
    "LedgerWriter",
    "current_revision",
    "head_revision",
    "make_engine",
    "migrate",
    "migrate_engine",
]
