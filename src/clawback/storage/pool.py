"""The database connection pool of a gateway process, and what it reports.

SQLAlchemy's ``QueuePool`` was chosen over ``psycopg_pool`` by measuring (``benchmarks/pool_bench.py``, figures
in ``benchmarks/README.md``). Pooling is what matters: a key-table read took p50 22.7 ms with a connection per
request and p50 0.75 ms pooled with pre-ping (1 thread; 8.8 ms against 0.60 ms a request at 8 threads). Between
the pools, ``psycopg_pool`` checks out cheaper (p50 93 µs against 325 µs without pre-ping and 747 µs with it:
SQLAlchemy adds a rollback on return, and the ping is a round trip). That difference is paid per checkout, and
nothing in the gateway checks out per request: the ledger writer takes one connection per batch, the key table
and the budgets one per refresh (every 1-2 s). So the pool stays the one every storage module already goes
through (SQLite and PostgreSQL alike, one engine per process, one pre-ping) rather than a second way to reach the
same database.

``WatchedQueuePool`` adds only what the stock pool does not count: how many threads are waiting for a
connection, how many gave up (acquire timeouts, whose error names the setting to change), connection errors,
and connections held longer than ``held_warn_s`` (a leak, or a transaction left open), logged with the holder's
thread name. ``pool_stats(engine)`` is what ``/healthz`` and ``/metrics`` show.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Engine, exc
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool

__all__ = ["PoolStats", "WatchedQueuePool", "connection_budget_error", "pool_stats"]

log = logging.getLogger("clawback.pool")


@dataclass(frozen=True, slots=True)
class PoolStats:
    size: int  # pool_size: connections kept open
    max_overflow: int
    open: int  # connections open now (kept + overflow)
    in_use: int  # checked out now
    waiting: int  # threads waiting for a connection now
    timeouts: int  # acquires that gave up after pool_timeout_s
    errors: int  # acquires that failed otherwise (the database refused or dropped the connection)
    held_too_long: int  # check-ins after more than held_warn_s
    max_held_s: float  # the longest a connection was held so far

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class WatchedQueuePool(QueuePool):
    """``QueuePool`` that counts waiters, timeouts, errors and long holds (see the module docstring)."""

    def __init__(self, *args: Any, held_warn_s: float = 30.0, setting: str = "ledger", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.held_warn_s = held_warn_s
        self.setting = setting
        self.waiting = 0
        self.timeouts = 0
        self.errors = 0
        self.held_too_long = 0
        self.max_held_s = 0.0
        self._count_lock = threading.Lock()
        self._depth = threading.local()

    def recreate(self) -> WatchedQueuePool:
        # engine.dispose() replaces the pool with a fresh copy: carry the counters over, they are the process's.
        fresh = WatchedQueuePool(
            self._creator,
            pool_size=self._pool.maxsize,
            max_overflow=self._max_overflow,
            pre_ping=self._pre_ping,
            use_lifo=self._pool.use_lifo,
            timeout=self._timeout,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            _dispatch=self.dispatch,
            dialect=self._dialect,
            held_warn_s=self.held_warn_s,
            setting=self.setting,
        )
        fresh.timeouts, fresh.errors = self.timeouts, self.errors
        fresh.held_too_long, fresh.max_held_s = self.held_too_long, self.max_held_s
        return fresh

    def _do_get(self) -> ConnectionPoolEntry:
        # QueuePool._do_get may call itself (a lost race for an overflow slot): count the outermost call only.
        if getattr(self._depth, "n", 0):
            return super()._do_get()
        self._depth.n = 1
        with self._count_lock:
            self.waiting += 1
        try:
            record = super()._do_get()
            record.info["clawback_checked_out"] = (time.monotonic(), threading.current_thread().name)
            return record
        except exc.TimeoutError as error:
            with self._count_lock:
                self.timeouts += 1
            raise exc.TimeoutError(
                f"{error.args[0]}: every pooled database connection was busy for {self._timeout:g} s; raise "
                f"{self.setting}.pool_size / {self.setting}.pool_max_overflow (mind PostgreSQL's max_connections) "
                f"or {self.setting}.pool_timeout_s"
            ) from None
        except Exception:
            with self._count_lock:
                self.errors += 1
            raise
        finally:
            self._depth.n = 0
            with self._count_lock:
                self.waiting -= 1

    def _do_return_conn(self, record: ConnectionPoolEntry) -> None:
        # Counted here and in _do_get rather than with pool events: events are copied to the pool that
        # dispose() recreates, and would keep counting on the old one.
        taken = record.info.pop("clawback_checked_out", None)
        if taken is not None:
            held = time.monotonic() - taken[0]
            with self._count_lock:
                self.max_held_s = max(self.max_held_s, held)
                if held > self.held_warn_s:
                    self.held_too_long += 1
            if held > self.held_warn_s:
                log.warning("a database connection was held %.1f s by thread %s (more than %s.pool_held_warn_s=%g)",
                            held, taken[1], self.setting, self.held_warn_s)  # fmt: skip
        super()._do_return_conn(record)

    def stats(self) -> PoolStats:
        with self._count_lock:
            return PoolStats(
                size=self.size(),
                max_overflow=self._max_overflow,
                open=self.checkedin() + self.checkedout(),
                in_use=self.checkedout(),
                waiting=self.waiting,
                timeouts=self.timeouts,
                errors=self.errors,
                held_too_long=self.held_too_long,
                max_held_s=round(self.max_held_s, 3),
            )


def pool_stats(engine: Engine) -> PoolStats | None:
    """The engine's pool statistics; None for a pool that is not watched (SQLite's)."""
    pool = engine.pool
    return pool.stats() if isinstance(pool, WatchedQueuePool) else None


def connection_budget_error(engine: Engine, *, per_process: int, workers: int, replicas: int) -> str | None:
    """Why this deployment would run PostgreSQL out of connections, or None (it fits, or it cannot be known).

    The arithmetic: ``per_process`` (pool_size + pool_max_overflow) x ``workers`` x ``replicas`` must stay within
    ``max_connections - superuser_reserved_connections`` (what ordinary roles may open). Other clients of the
    same server (the dashboard, psql, other services) also need some: that is left to the operator. A database
    that cannot be reached now is not a reason to refuse to start (the ledger journals until it is back).
    """
    if engine.dialect.name != "postgresql":
        return None
    try:
        with engine.connect() as conn:
            max_connections = int(conn.exec_driver_sql("SHOW max_connections").scalar_one())
            reserved = int(conn.exec_driver_sql("SHOW superuser_reserved_connections").scalar_one())
    except Exception as error:
        log.warning("cannot read max_connections from the ledger database (%s); connection budget not checked",
                    str(error).splitlines()[0])  # fmt: skip
        return None
    need = per_process * workers * replicas
    available = max_connections - reserved
    if need <= available:
        return None
    return (
        f"ledger pool: {per_process} connections per process (ledger.pool_size + ledger.pool_max_overflow) x "
        f"{workers} worker(s) (gateway.workers) x {replicas} replica(s) (gateway.replicas) = {need}, more than the "
        f"{available} PostgreSQL allows ({max_connections} max_connections - {reserved} reserved); lower the pool "
        f"size or raise max_connections (or put PgBouncer in front)"
    )
