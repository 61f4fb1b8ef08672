"""Engines for the embedded (SQLite) and shared (PostgreSQL) databases, configured one way.

Every storage module builds its engine here so that SQLite always runs in WAL mode (readers — the dashboard,
reports — never block the ledger writer, and the writer never blocks them) and PostgreSQL connections are
checked before use (a pool that survived a database restart must not hand out dead connections).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

from clawback.config import LedgerSettings
from clawback.storage.pool import WatchedQueuePool

__all__ = ["engine_from_settings", "make_engine"]


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """WAL + synchronous=NORMAL: durable across process crashes, one fsync per checkpoint, not per commit."""
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 5, **kwargs: Any) -> Engine:
    """A sync engine for ``url``; SQLite gets WAL pragmas on every connection, PostgreSQL a pre-ping pool.

    ``pool_size``/``max_overflow`` apply to server databases only (SQLite file databases pool per file).
    SQLite connections are allowed to move between threads because the ledger writes from its own thread
    while readers may run elsewhere; the pool never shares one connection between two threads at once.
    """
    # orjson for JSON columns (labels, savings): the stdlib encoder showed up in the writer thread's profile.
    kwargs.setdefault("json_serializer", _json_dumps)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args = dict(kwargs.pop("connect_args", {}))
        connect_args.setdefault("check_same_thread", False)
        engine = create_engine(url, connect_args=connect_args, **kwargs)
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(url, pool_size=pool_size, max_overflow=max_overflow, **kwargs)


def engine_from_settings(settings: LedgerSettings) -> Engine:
    """The process's one engine for the ledger database, its pool sized and watched as ``settings`` say.

    On PostgreSQL a ``WatchedQueuePool`` (``storage/pool.py``): pre-ping, recycle, an acquire timeout whose
    error names the setting, and the counters ``/healthz`` and ``/metrics`` show; ``connect_timeout`` so that a
    database that does not answer costs seconds, not a hang. SQLite keeps its per-file pooling.
    """
    if make_url(settings.url).get_backend_name() == "sqlite":
        return make_engine(settings.url)
    engine = create_engine(
        settings.url,
        poolclass=WatchedQueuePool,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_max_overflow,
        pool_timeout=settings.pool_timeout_s,
        pool_recycle=settings.pool_recycle_s,
        pool_pre_ping=settings.pool_pre_ping,
        json_serializer=_json_dumps,
        connect_args={"connect_timeout": max(1, round(settings.connect_timeout_s))},
    )
    if isinstance(engine.pool, WatchedQueuePool):  # create_engine passes only the pool arguments it knows
        engine.pool.held_warn_s = settings.pool_held_warn_s
    return engine
