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

__all__ = ["make_engine"]


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
