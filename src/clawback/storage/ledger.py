"""The request ledger: one record per request, written off the request path and never lost.

Design
------
``LedgerWriter`` is one implementation for every caller — the async gateway, the async and the sync
in-process wrapper — built on a dedicated daemon thread that owns a bounded ``queue.Queue``:

* ``submit(record)`` is a thread-safe ``put_nowait``, callable from an event loop
  or from any thread, and never blocks. No event loop is needed, which is what the sync wrapper lacks;
  an ``asyncio.Queue`` would need one and is not thread-safe.
* The thread drains the queue in batches of up to ``batch_size`` records, waiting at most
  ``flush_interval_s`` after the first record of a batch, and inserts each batch in one transaction with a
  plain sync SQLAlchemy engine. Batches are small (32 by default): a batch is a burst of CPU in the
  gateway's process, and larger bursts preempted the event loop often enough to show in the exact-cache hit
  p99 (``docs/performance.md``). Commits are cheap (WAL, synchronous=NORMAL).
  A single long-lived thread costs nothing per batch, whereas
  ``asyncio.to_thread`` per flush would need a running loop and a hop to the default executor per batch
  (shared with everything else that uses it) for no gain: the database work is blocking either way.
* Inserts are ``INSERT ... ON CONFLICT (request_id) DO NOTHING`` (SQLite and PostgreSQL dialects), so a
  record written twice — a retried request, a journal replayed after a crash — is stored once.
* Nothing is dropped. A full queue spills the record to the local JSONL journal (counted as ``spilled``);
  a failed database write (the database is down, locked, or its schema is gone) appends the whole batch
  to the journal and opens a circuit for ``retry_interval_s`` during which batches go straight to the
  journal instead of waiting on a dead database. The journal is replayed at start and after the next
  successful write (or on an idle tick once the circuit closes). Records the database refuses as invalid
  (an integrity or data error even when inserted one by one) go to ``<journal>.bad``.
* ``close()`` / ``aclose()`` drain the queue, write or journal every record, and fsync the journal: a
  clean shutdown loses nothing, and a record submitted after close is journaled for the next start.

Money is integer micro-dollars throughout (exact sums in every database): ``pricing.Cost.micro_usd`` makes
them, ``pricing.from_micro_usd`` turns them back into ``Decimal`` dollars.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import operator
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

import orjson
from sqlalchemy import Connection, Engine, Table, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.sql.dml import Insert

from clawback.config import LedgerSettings
from clawback.pricing import from_micro_usd
from clawback.storage.engine import make_engine
from clawback.storage.journal import Journal
from clawback.storage.ledger_models import LedgerRow
from clawback.storage.migrate import migrate_engine
from clawback.storage.rollups import write_rollups

__all__ = [
    "Endpoint",
    "LedgerReader",
    "LedgerRecord",
    "LedgerStats",
    "LedgerWriter",
]

log = logging.getLogger(__name__)

Endpoint = Literal["messages", "count_tokens", "batches"]

ledger_table = cast(Table, LedgerRow.__table__)

#: How many times ``batch_size`` a batch may take when the queue holds a backlog.
_BACKLOG_FACTOR = 16

#: How often the writer looks for more records while it collects a batch.
_COLLECT_POLL_S = 0.01


@dataclass(slots=True, kw_only=True)
class LedgerRecord:
    """What the pipeline knows about one finished request; field names are the ledger's column names.

    Treated as immutable once built (nothing assigns to a record; ``dataclasses.replace`` makes a changed copy),
    but not ``frozen``: a frozen ``__init__`` sets its 30 fields through ``object.__setattr__``, 3-5x the cost of
    a plain one, and one record is built on every request's path (issue 19)."""

    request_id: str
    started_at: datetime
    finished_at: datetime
    model: str
    endpoint: Endpoint
    status: int
    latency_ms: float
    stream: bool = False
    batch: bool = False
    error_type: str | None = None
    ttft_ms: float | None = None
    key_id: str | None = None
    user: str | None = None
    team: str | None = None
    feature: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_5m_input_tokens: int = 0
    cache_write_1h_input_tokens: int = 0
    cost_micro_usd: int = 0
    counterfactual_micro_usd: int = 0
    savings_micro_usd: dict[str, int] = field(default_factory=dict)
    shadow_savings_micro_usd: dict[str, int] = field(default_factory=dict)
    """What stages in shadow mode would have saved (not in the counterfactual: nothing was saved)."""
    cache_status: str | None = None
    upstream_request_id: str | None = None
    budget_status: str | None = None
    """What the budget stage decided: reserved, downgraded, refused, fail_open, fail_closed (None: no budget)."""

    def __post_init__(self) -> None:
        # Refuse naive timestamps here, on the caller's stack, rather than in the writer thread later.
        if self.started_at.tzinfo is None or self.finished_at.tzinfo is None:
            raise ValueError("LedgerRecord timestamps must be timezone-aware (UTC)")

    @property
    def cost_usd(self) -> Decimal:
        return from_micro_usd(self.cost_micro_usd)

    @property
    def saved_micro_usd(self) -> int:
        """What this request did not cost: counterfactual minus actual."""
        return self.counterfactual_micro_usd - self.cost_micro_usd

    def to_row(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELD_NAMES}

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict for the journal (datetimes become ISO 8601 strings via orjson)."""
        return self.to_row()

    @classmethod
    def from_mapping(cls, data: Mapping[Any, Any]) -> LedgerRecord:
        """Build from a database row or a journal line; unknown keys (e.g. ``id``) are ignored."""
        values = {name: data[name] for name in _FIELD_NAMES if name in data}
        for name in ("started_at", "finished_at"):
            if isinstance(values.get(name), str):
                values[name] = datetime.fromisoformat(values[name])
        values["labels"] = dict(values.get("labels") or {})
        for name in ("savings_micro_usd", "shadow_savings_micro_usd"):
            values[name] = {str(k): int(v) for k, v in (values.get(name) or {}).items()}
        return cls(**values)


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(LedgerRecord))

# ON CONFLICT on request_id only: "INSERT OR IGNORE" would also swallow NOT NULL violations, silently.
_SQLITE_ROW = f"({', '.join('?' for _ in _FIELD_NAMES)})"
#: Rows per multi-row INSERT: 30 columns x 300 rows stays under SQLite's 32,766 bound variables.
_SQLITE_ROWS_PER_STATEMENT = 300


@functools.lru_cache(maxsize=8)
def _sqlite_insert(rows: int) -> str:
    """One INSERT for ``rows`` rows. A single statement is one ``sqlite3_step``: the driver drops and retakes
    the GIL around each step, and with ``executemany`` (a step per row) the writer thread queued for the GIL
    once per row behind a busy event loop, fell behind under load and filled its queue."""
    return (
        f"INSERT INTO ledger ({', '.join(_FIELD_NAMES)}) VALUES {', '.join([_SQLITE_ROW] * rows)} "
        "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
    )


_DATETIME_COLUMNS = tuple(i for i, f in enumerate(fields(LedgerRecord)) if f.name in ("started_at", "finished_at"))
_JSON = ("labels", "savings_micro_usd", "shadow_savings_micro_usd")
_JSON_COLUMNS = tuple(i for i, f in enumerate(fields(LedgerRecord)) if f.name in _JSON)


_ALL_FIELDS = operator.attrgetter(*_FIELD_NAMES)


def _sqlite_params(record: LedgerRecord) -> tuple[Any, ...]:
    """A row as SQLAlchemy would store it on SQLite: UTC timestamps as text (UTCDateTime), JSON as text."""
    values = list(_ALL_FIELDS(record))
    for i in _DATETIME_COLUMNS:
        stamp = values[i]
        if isinstance(stamp, datetime):
            if stamp.tzinfo is None:
                raise ValueError(f"naive datetime {stamp!r}: ledger timestamps must be timezone-aware")
            # ``isoformat`` is ~10x cheaper than ``strftime``; "YYYY-MM-DD HH:MM:SS.ffffff" is its first 26 characters.
            values[i] = stamp.astimezone(UTC).isoformat(" ", "microseconds")[:26]
    for i in _JSON_COLUMNS:
        if values[i] is not None:
            values[i] = orjson.dumps(values[i]).decode()
    return tuple(values)


@dataclass(frozen=True, slots=True)
class LedgerStats:
    """Counters for /metrics and health. After a clean close: submitted == written + journaled."""

    submitted: int  # records given to submit()
    written: int  # records stored straight from the queue (duplicates included)
    journaled: int  # records appended to the journal (spills included)
    spilled: int  # ... of which because the queue was full or the writer closed
    replayed: int  # journaled records later stored in the database
    duplicates: int  # records whose request_id was already stored (ignored, by design)
    rejected: int  # records the database refused as invalid; kept in <journal>.bad
    lost: int  # records neither stored nor journaled (the journal itself failed); should stay 0
    write_errors: int  # failed database writes (outages)
    queue_depth: int
    journal_pending: int  # journaled records not yet replayed
    database_up: bool  # False while the circuit is open after a failed write
    last_error: str | None
    pool_timeouts: int = 0  # writes that found no pooled connection within ledger.pool_timeout_s (journaled)


class _Flush:
    __slots__ = ("done",)

    def __init__(self) -> None:
        self.done = threading.Event()


class _Stop:
    __slots__ = ()


_QueueItem = LedgerRecord | _Flush | _Stop


def _is_bad_data(exc: BaseException) -> bool:
    """The records are at fault (retrying will not help), as opposed to the database being unavailable.

    Integrity/data errors come from the database; a ``StatementError`` that is not a DBAPI error failed
    while binding parameters (a naive datetime, an unserialisable label). Everything else — connection
    refused, database locked, table or database missing — is an outage and is retried later.
    """
    if isinstance(exc, (IntegrityError, DataError)):
        return True
    return isinstance(exc, StatementError) and not isinstance(exc, DBAPIError)


class _Outage(Exception):
    """The database cannot take writes right now; the records must go to the journal."""


class LedgerWriter:
    """Batched, idempotent, never-lossy ledger writes from a background thread (see the module docstring)."""

    def __init__(
        self,
        url: str | Engine,
        *,
        queue_size: int = 10_000,
        batch_size: int = 32,
        flush_interval_s: float = 0.25,
        journal_path: str | Path = "clawback-ledger.journal",
        retry_interval_s: float = 2.0,
        migrate_on_start: bool = True,
    ) -> None:
        if isinstance(url, Engine):
            self._engine, self._owns_engine = url, False
        else:
            # One thread writes, so a small pool is enough; building it here fails fast on a bad URL/driver.
            self._engine, self._owns_engine = make_engine(url, pool_size=1, max_overflow=1), True
        if self._engine.dialect.name not in ("sqlite", "postgresql"):
            raise ValueError(f"ledger: unsupported database {self._engine.dialect.name!r} (sqlite or postgresql)")
        self._queue: queue.Queue[_QueueItem] = queue.Queue(maxsize=queue_size)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._retry_interval_s = retry_interval_s
        self._migrate_on_start = migrate_on_start
        self._schema_ready = not migrate_on_start
        self._journal = Journal(journal_path)
        self._insert = self._insert_statement()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._lifecycle = threading.Lock()
        self._stats_lock = threading.Lock()
        self._down_until = 0.0
        self._submitted = self._written = self._journaled = self._spilled = self._replayed = 0
        self._duplicates = self._rejected = self._lost = self._write_errors = self._pool_timeouts = 0
        self._last_error: str | None = None

    @classmethod
    def from_settings(cls, settings: LedgerSettings, **overrides: Any) -> LedgerWriter:
        return cls(
            overrides.pop("url", settings.url),
            queue_size=overrides.pop("queue_size", settings.queue_size),
            batch_size=overrides.pop("batch_size", settings.batch_size),
            flush_interval_s=overrides.pop("flush_interval_s", settings.flush_interval_s),
            journal_path=overrides.pop("journal_path", settings.journal_path),
            **overrides,
        )

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def journal(self) -> Journal:
        return self._journal

    # -- lifecycle ---------------------------------------------------------------------------------------

    def open(self) -> None:
        """Start the writer thread (sync callers). Migration and journal replay run in that thread."""
        with self._lifecycle:
            if self._closed:
                raise RuntimeError("LedgerWriter is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="clawback-ledger", daemon=True)
                self._thread.start()

    def close(self, timeout: float | None = None) -> None:
        """Write or journal everything submitted so far, then stop; later submits are journaled."""
        with self._lifecycle:
            if self._closed:
                return
            if self._thread is None:  # never started: still store what was queued
                self._thread = threading.Thread(target=self._run, name="clawback-ledger", daemon=True)
                self._thread.start()
            self._closed = True
            thread = self._thread
        self._queue.put(_Stop())
        thread.join(timeout)
        if thread.is_alive():
            log.error("ledger writer did not stop within %ss; undrained records stay queued", timeout)
            return
        # A submit that raced with close may have queued a record after the stop marker: journal it.
        leftovers: list[LedgerRecord] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, LedgerRecord):
                leftovers.append(item)
            elif isinstance(item, _Flush):
                item.done.set()
        if leftovers:
            self._to_journal(leftovers, spilled=True)
            self._journal.close()
        if self._owns_engine:
            self._engine.dispose()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every record submitted before this call is stored or journaled."""
        if self._thread is None or not self._thread.is_alive():
            raise RuntimeError("LedgerWriter is not running")
        marker = _Flush()
        self._queue.put(marker, timeout=timeout)
        return marker.done.wait(timeout)

    async def start(self) -> None:
        await asyncio.to_thread(self.open)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    async def aflush(self) -> bool:
        return await asyncio.to_thread(self.flush)

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    # -- the request path --------------------------------------------------------------------------------

    def submit(self, record: LedgerRecord) -> None:
        """Queue ``record`` for writing; never blocks on the database, never drops.

        Thread-safe, and safe to call from an event loop. A full queue (or a closed writer) spills the
        record to the journal: a small local file append, only under overload.
        """
        with self._stats_lock:
            self._submitted += 1
        if not self._closed:
            try:
                self._queue.put_nowait(record)
                return
            except queue.Full:
                pass
        self._to_journal([record], spilled=True)

    def stats(self) -> LedgerStats:
        with self._stats_lock:
            return LedgerStats(
                submitted=self._submitted,
                written=self._written,
                journaled=self._journaled,
                spilled=self._spilled,
                replayed=self._replayed,
                duplicates=self._duplicates,
                rejected=self._rejected,
                lost=self._lost,
                write_errors=self._write_errors,
                queue_depth=self._queue.qsize(),
                journal_pending=self._journal.pending,
                database_up=time.monotonic() >= self._down_until,
                last_error=self._last_error,
                pool_timeouts=self._pool_timeouts,
            )

    # -- the writer thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        self._maybe_replay()
        while True:
            try:
                if self._cycle():
                    break
            except Exception:  # a bug must not kill the thread that holds everyone's records
                log.exception("ledger writer: unexpected error; continuing")
        try:
            self._journal.close()
        except OSError:
            log.exception("ledger writer: cannot close the journal")

    def _cycle(self) -> bool:
        """One batch: collect, store (or journal), replay if due. Returns True when told to stop."""
        try:
            item: _QueueItem | None = self._queue.get(timeout=self._flush_interval_s)
        except queue.Empty:
            item = None
        batch: list[LedgerRecord] = []
        flushes: list[_Flush] = []
        stop = False
        deadline = time.monotonic() + self._flush_interval_s
        # Small batches keep the writer's CPU bursts short while it keeps up; behind a backlog, a batch takes up to
        # _BACKLOG_FACTOR times more, because a transaction per 32 rows caps PostgreSQL ingest near 2,000 rows/s on
        # this machine where 500-row batches reach 11,000 (benchmarks/pool_bench.py), and falling behind fills the
        # queue, which spills to the journal.
        limit = self._batch_size
        backlog = self._queue.qsize()
        if backlog > limit:
            limit = min(backlog + 1, limit * _BACKLOG_FACTOR)
        while item is not None:
            if isinstance(item, LedgerRecord):
                batch.append(item)
            elif isinstance(item, _Flush):
                flushes.append(item)
            else:
                stop = True
            if stop or flushes or len(batch) >= limit:
                break
            item = self._next_item(deadline)
        if batch:
            self._write_batch(batch)
        self._maybe_replay()
        self._journal.sync()
        for marker in flushes:
            marker.done.set()
        return stop

    def _next_item(self, deadline: float) -> _QueueItem | None:
        """The next queued item, polling until ``deadline``; None when the batching window closes empty.

        It sleeps rather than waits on the queue: a waiting consumer makes every ``submit()`` notify it, and
        that wake-up per request (a GIL hand-off between threads) was a visible share of the gateway's CPU under
        load (``docs/performance.md``).
        """
        while True:
            try:
                return self._queue.get_nowait()
            except queue.Empty:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                time.sleep(min(remaining, _COLLECT_POLL_S))

    def _write_batch(self, batch: list[LedgerRecord]) -> None:
        if time.monotonic() < self._down_until:
            self._to_journal(batch, spilled=False)
            return
        try:
            inserted, rejected = self._store(batch)
        except _Outage:
            self._to_journal(batch, spilled=False)
            return
        with self._stats_lock:
            self._written += len(batch) - rejected
            self._duplicates += len(batch) - rejected - inserted

    def _maybe_replay(self) -> None:
        """Replay the journal while the database takes writes; stop at the first failure (retried later)."""
        while self._journal.has_pending() and time.monotonic() >= self._down_until:
            try:
                self._journal.replay(self._replay_chunk, self._batch_size)
            except _Outage:
                return
            except OSError:
                log.exception("ledger journal: cannot read %s", self._journal.replay_path)
                return

    def _replay_chunk(self, items: list[dict[str, Any]]) -> None:
        rows: list[LedgerRecord] = []
        originals: list[dict[str, Any]] = []
        bad: list[dict[str, Any]] = []
        for item in items:
            try:
                rows.append(LedgerRecord.from_mapping(item))
                originals.append(item)
            except (KeyError, TypeError, ValueError):
                bad.append(item)
        if bad:
            self._reject(bad, "unreadable journal record(s)")
        inserted, rejected = self._store(rows, originals)
        with self._stats_lock:
            self._replayed += len(rows) - rejected
            self._duplicates += len(rows) - rejected - inserted

    def _store(
        self, rows: Sequence[LedgerRecord], originals: Sequence[dict[str, Any]] | None = None
    ) -> tuple[int, int]:
        """Insert ``rows`` in one transaction -> (new rows, rejected rows); raise ``_Outage`` if the DB is down.

        ``originals`` are what to keep aside for a refused row (the journal lines being replayed); by default
        the record itself.

        An integrity/data error in a batch is retried row by row so that one bad record does not send a
        whole batch to the journal forever; the rows still refused are kept in ``<journal>.bad``.
        """
        if not rows:
            return 0, 0
        try:
            self._ensure_schema()
            with self._engine.begin() as conn:
                return self._insert_and_roll_up(conn, rows), 0
        except Exception as exc:
            if not _is_bad_data(exc):
                self._outage(exc)
                raise _Outage from exc
            log.warning("ledger: batch refused (%s); retrying row by row", str(exc).splitlines()[0])
        inserted = 0
        refused: list[dict[str, Any]] = []
        for row, original in zip(rows, originals or [r.to_row() for r in rows], strict=True):
            try:
                with self._engine.begin() as conn:
                    inserted += self._insert_and_roll_up(conn, [row])
            except Exception as exc:
                if not _is_bad_data(exc):
                    self._outage(exc)
                    raise _Outage from exc
                refused.append(original)
        self._reject(refused, "record(s) refused by the database")
        return inserted, len(refused)

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            migrate_engine(self._engine)
            self._schema_ready = True

    def _outage(self, exc: Exception) -> None:
        """Open the circuit: journal directly for ``retry_interval_s``, then try the database again."""
        first = time.monotonic() >= self._down_until
        self._down_until = time.monotonic() + self._retry_interval_s
        # The schema may be what is gone (database recreated): migrate again on recovery; it is idempotent.
        self._schema_ready = not self._migrate_on_start
        with self._stats_lock:
            self._write_errors += 1
            if isinstance(exc, PoolTimeoutError):
                self._pool_timeouts += 1
            self._last_error = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        (log.warning if first else log.debug)("ledger: database write failed, journaling: %s", self._last_error)
        if self._owns_engine:
            # Drop pooled connections that may be dead. A shared engine (the gateway's process pool) is left
            # alone: it pre-pings, and disposing it would hide a leak by opening a fresh pool beside the old one.
            self._engine.dispose()

    def _to_journal(self, records: Sequence[LedgerRecord], *, spilled: bool) -> None:
        try:
            count = self._journal.append(r.to_json() for r in records)
        except Exception:
            log.exception("ledger: %d record(s) LOST: neither the database nor the journal took them", len(records))
            with self._stats_lock:
                self._lost += len(records)
            return
        with self._stats_lock:
            self._journaled += count
            if spilled:
                self._spilled += count

    def _reject(self, items: list[dict[str, Any]], why: str) -> None:
        if not items:
            return
        try:
            self._journal.append_bad(items)
            log.error("ledger: %d %s, kept in %s", len(items), why, self._journal.bad_path)
            with self._stats_lock:
                self._rejected += len(items)
        except Exception:
            log.exception("ledger: %d %s LOST: cannot write %s", len(items), why, self._journal.bad_path)
            with self._stats_lock:
                self._lost += len(items)

    def _insert_and_roll_up(self, conn: Connection, rows: Sequence[LedgerRecord]) -> int:
        """Insert ``rows`` and add the new ones to the rollup tables, in ``conn``'s transaction; returns new rows.

        Only the rows really inserted are rolled up (a retried request or a replayed journal line that is
        already stored is not counted twice), and in the same transaction, so rollups never disagree with
        the raw rows (``clawback.storage.rollups``).
        """
        new_ids = self._insert_rows(conn, rows)
        if len(new_ids) == len(rows):
            fresh: Sequence[LedgerRecord] = rows
        else:  # some were stored already, or a batch holds one request twice (a retry): each new id once
            ids = set(new_ids)
            fresh = []
            for r in rows:
                if r.request_id in ids:
                    fresh.append(r)
                    ids.discard(r.request_id)
        write_rollups(conn, fresh)
        return len(new_ids)

    def _insert_rows(self, conn: Connection, rows: Sequence[LedgerRecord]) -> list[str]:
        """Insert, skipping request ids already stored; returns the request ids that were new.

        On SQLite the rows go straight to the driver as one multi-row INSERT per chunk (``ON CONFLICT DO
        NOTHING RETURNING request_id``: only the rows inserted come back). SQLAlchemy's per-row parameter
        processing made the writer thread hold the GIL for ~25 µs a record, which showed up in the gateway's
        latency tail. Values are stored exactly as SQLAlchemy would store them (UTC text timestamps, JSON text),
        so reads are unchanged. PostgreSQL keeps the portable statement.
        """
        if self._engine.dialect.name != "sqlite":
            if self._engine.dialect.driver == "psycopg":
                return _pg_copy_insert(conn, rows)
            return [row[0] for row in conn.execute(self._insert, [r.to_row() for r in rows])]
        inserted: list[str] = []
        for start in range(0, len(rows), _SQLITE_ROWS_PER_STATEMENT):
            chunk = rows[start : start + _SQLITE_ROWS_PER_STATEMENT]
            params = tuple(itertools.chain.from_iterable(map(_sqlite_params, chunk)))
            inserted.extend(row[0] for row in conn.exec_driver_sql(_sqlite_insert(len(chunk)), params))
        return inserted

    def _insert_statement(self) -> Insert:
        """``INSERT ... ON CONFLICT (request_id) DO NOTHING RETURNING request_id`` for this dialect.

        RETURNING counts the rows really inserted on both backends (``rowcount`` of an executemany is not
        reliable across drivers); SQLAlchemy's insertmanyvalues turns the batch into few multi-row INSERTs.
        """
        if self._engine.dialect.name == "postgresql":
            pg_stmt = postgresql.insert(ledger_table).on_conflict_do_nothing(index_elements=["request_id"])
            return pg_stmt.returning(ledger_table.c.request_id)
        lite_stmt = sqlite.insert(ledger_table).on_conflict_do_nothing(index_elements=["request_id"])
        return lite_stmt.returning(ledger_table.c.request_id)


_COLUMNS = ", ".join(f'"{name}"' for name in _FIELD_NAMES)
#: Per connection, emptied at each commit: the batch lands here by COPY, then moves with one INSERT ... SELECT.
_PG_STAGING = (
    f"CREATE TEMP TABLE IF NOT EXISTS ledger_incoming ON COMMIT DELETE ROWS AS SELECT {_COLUMNS} FROM ledger "
    "WITH NO DATA"
)
_PG_MOVE = (
    f"INSERT INTO ledger ({_COLUMNS}) SELECT {_COLUMNS} FROM ledger_incoming "
    "ON CONFLICT (request_id) DO NOTHING RETURNING request_id"
)


def _pg_values(record: LedgerRecord) -> tuple[Any, ...]:
    values = list(_ALL_FIELDS(record))
    for i in _JSON_COLUMNS:
        if values[i] is not None:
            values[i] = orjson.dumps(values[i]).decode()  # COPY text: jsonb parses it server-side
    return tuple(values)


def _pg_copy_insert(conn: Connection, rows: Sequence[LedgerRecord]) -> list[str]:
    """PostgreSQL (psycopg 3): COPY the batch into a temporary table, then one ``INSERT ... SELECT ... ON CONFLICT
    (request_id) DO NOTHING RETURNING request_id``; returns the request ids really inserted.

    COPY is what sustained ingest needs (``benchmarks/pool_bench.py``: SQLAlchemy's multi-row INSERT spent its time
    binding parameters row by row in Python); going through a staging table keeps the idempotence of ON CONFLICT,
    which COPY alone does not have. Errors from the driver are raised as SQLAlchemy's, so that bad rows are told
    from outages as for every other statement.
    """
    import psycopg

    driver = conn.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    try:
        with driver.cursor() as cursor:
            cursor.execute(_PG_STAGING)
            with cursor.copy(f"COPY ledger_incoming ({_COLUMNS}) FROM STDIN") as copy:
                for record in rows:
                    copy.write_row(_pg_values(record))
            cursor.execute(_PG_MOVE)
            return [row[0] for row in cursor.fetchall()]
    except (psycopg.IntegrityError, psycopg.DataError) as exc:
        wrap = IntegrityError if isinstance(exc, psycopg.IntegrityError) else DataError
        raise wrap("COPY ledger_incoming", None, exc) from exc
    except psycopg.Error as exc:
        raise DBAPIError("COPY ledger_incoming", None, exc) from exc


class LedgerReader:
    """Read side for tests, reports and the dashboard."""

    def __init__(self, url: str | Engine) -> None:
        if isinstance(url, Engine):
            self._engine, self._owns_engine = url, False
        else:
            self._engine, self._owns_engine = make_engine(url), True

    def close(self) -> None:
        if self._owns_engine:
            self._engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def rows(self, since: datetime | None = None, limit: int | None = None) -> list[LedgerRecord]:
        """Records started at or after ``since``, oldest first."""
        stmt = select(ledger_table).order_by(ledger_table.c.started_at, ledger_table.c.id)
        if since is not None:
            stmt = stmt.where(ledger_table.c.started_at >= since)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._engine.connect() as conn:
            return [LedgerRecord.from_mapping(row._mapping) for row in conn.execute(stmt)]

    def get(self, request_id: str) -> LedgerRecord | None:
        stmt = select(ledger_table).where(ledger_table.c.request_id == request_id)
        with self._engine.connect() as conn:
            row = conn.execute(stmt).first()
        return None if row is None else LedgerRecord.from_mapping(row._mapping)

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(ledger_table)).scalar_one())

    _SUMMED = (
        "cost_micro_usd",
        "counterfactual_micro_usd",
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_write_5m_input_tokens",
        "cache_write_1h_input_tokens",
    )

    def totals(self, since: datetime | None = None) -> dict[str, int]:
        """Exact sums (integers, micro-dollars for money) and the request count, computed in the database."""
        columns = [func.coalesce(func.sum(ledger_table.c[name]), 0).label(name) for name in self._SUMMED]
        stmt = select(func.count().label("count"), *columns).select_from(ledger_table)
        if since is not None:
            stmt = stmt.where(ledger_table.c.started_at >= since)
        with self._engine.connect() as conn:
            row = conn.execute(stmt).one()
        result = {name: int(value) for name, value in row._mapping.items()}
        result["saved_micro_usd"] = result["counterfactual_micro_usd"] - result["cost_micro_usd"]
        return result

    def savings_by_stage(self, since: datetime | None = None, *, shadow: bool = False) -> dict[str, int]:
        """Micro-dollars saved per pipeline stage (summed in Python: JSON aggregation differs per backend);
        ``shadow``: what the stages in shadow mode would have saved."""
        column = ledger_table.c.shadow_savings_micro_usd if shadow else ledger_table.c.savings_micro_usd
        stmt = select(column)
        if since is not None:
            stmt = stmt.where(ledger_table.c.started_at >= since)
        totals: dict[str, int] = {}
        with self._engine.connect() as conn:
            for (savings,) in conn.execute(stmt.execution_options(yield_per=1000)):
                for stage, micro in (savings or {}).items():
                    totals[stage] = totals.get(stage, 0) + int(micro)
        return totals
