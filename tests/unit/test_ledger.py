"""The ledger against real SQLite files: batching, idempotency, durability through outages and overload.

The outage is a real one: another connection holds SQLite's write lock (``BEGIN EXCLUSIVE``), so the
writer's inserts fail with "database is locked" until it is released. (A read-only directory does not
work as a failure here: the tests may run as root, which ignores file permissions.)
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect, text

from clawback.config import LedgerSettings
from clawback.pricing import Cost, from_micro_usd
from clawback.storage import (
    LedgerReader,
    LedgerRecord,
    LedgerWriter,
    current_revision,
    head_revision,
    make_engine,
    migrate,
)

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)


def record(i: int | str, **overrides: Any) -> LedgerRecord:
    values: dict[str, Any] = {
        "request_id": f"req_{i}",
        "started_at": T0,
        "finished_at": T0 + timedelta(milliseconds=850),
        "model": "claude-sonnet-4-5",
        "endpoint": "messages",
        "status": 200,
        "latency_ms": 850.0,
        "input_tokens": 1000,
        "output_tokens": 100,
        "cost_micro_usd": 4500,
        "counterfactual_micro_usd": 6000,
        "savings_micro_usd": {"prompt_cache": 1500},
    }
    values.update(overrides)
    return LedgerRecord(**values)


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
def make_writer(tmp_path: Path, db: str) -> Iterator[Callable[..., LedgerWriter]]:
    writers: list[LedgerWriter] = []

    def factory(**kwargs: Any) -> LedgerWriter:
        kwargs.setdefault("journal_path", tmp_path / "ledger.journal")
        kwargs.setdefault("flush_interval_s", 0.02)
        kwargs.setdefault("retry_interval_s", 0.05)
        writer = LedgerWriter(kwargs.pop("url", db), **kwargs)
        writers.append(writer)
        return writer

    yield factory
    for writer in writers:
        writer.close(timeout=10)


@pytest.fixture
def reader(db: str) -> Iterator[LedgerReader]:
    migrate(db)
    with LedgerReader(db) as r:
        yield r


# -- money and records ----------------------------------------------------------------------------------


def test_micro_dollars_are_exact() -> None:
    def micro(dollars: Decimal) -> int:  # the one conversion to micro-dollars: the pricing module's
        return Cost(input=dollars).micro_usd

    assert micro(Decimal("0.000001")) == 1
    assert micro(Decimal("12345678.123456")) == 12_345_678_123_456
    assert micro(Decimal("0.0000005")) == 0  # half to even
    assert micro(Decimal("0.0000015")) == 2
    assert from_micro_usd(12_345_678_123_456) == Decimal("12345678.123456")
    assert micro(from_micro_usd(2**62 + 1)) == 2**62 + 1


def test_naive_timestamps_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        record(1, started_at=datetime(2025, 1, 1))


# -- migrations -----------------------------------------------------------------------------------------


def test_migration_on_sqlite_creates_table_indexes_and_wal(db: str) -> None:
    migrate(db)
    migrate(db)  # idempotent
    engine = make_engine(db)
    try:
        assert current_revision(engine) == head_revision() is not None
        insp = inspect(engine)
        assert "ledger" in insp.get_table_names()
        indexes = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("ledger")}
        assert indexes == {"ix_ledger_started_at": ["started_at"]}  # 0003 dropped key_id and model
        assert [u["column_names"] for u in insp.get_unique_constraints("ledger")] == [["request_id"]]
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert conn.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL
    finally:
        engine.dispose()


# -- writing --------------------------------------------------------------------------------------------


def test_all_fields_round_trip_exactly(make_writer: Callable[..., LedgerWriter], reader: LedgerReader) -> None:
    big = 2**53 + 1  # not representable as a float: proves money never passes through one
    original = record(
        "full",
        started_at=datetime(2025, 6, 1, 14, 0, tzinfo=UTC) + timedelta(microseconds=123456),
        finished_at=datetime(2025, 6, 1, 14, 0, 2, tzinfo=UTC),
        key_id="key_1",
        user="ada",
        team="core",
        feature="search",
        session_id="s-1",
        agent_id="a-1",
        labels={"env": "prod", "région": "é"},
        endpoint="count_tokens",
        stream=True,
        status=529,
        error_type="overloaded_error",
        latency_ms=2000.25,
        ttft_ms=120.5,
        input_tokens=3,
        output_tokens=5,
        cache_read_input_tokens=7,
        cache_write_5m_input_tokens=11,
        cache_write_1h_input_tokens=13,
        cost_micro_usd=big,
        counterfactual_micro_usd=big + 7,
        savings_micro_usd={"prompt_cache": 5, "pruning": 2},
        cache_status="miss",
        upstream_request_id="req_upstream",
        batch=True,
    )
    writer = make_writer()
    writer.open()
    writer.submit(original)
    assert writer.flush(timeout=10)
    assert reader.get("req_full") == original
    assert reader.get("nope") is None
    assert original.cost_usd == Decimal(big) / 1_000_000
    assert reader.totals()["saved_micro_usd"] == 7


def test_sqlite_rows_are_stored_exactly_as_sqlalchemy_stores_them(
    make_writer: Callable[..., LedgerWriter], tmp_path: Path, db: str
) -> None:
    """The writer's SQLite fast path (its own multi-row INSERT, values converted in ``_sqlite_params``) against
    SQLAlchemy's portable INSERT of the same records: the raw stored values must be identical, column by column."""
    from clawback.storage.ledger import ledger_table

    east = timezone(timedelta(hours=5, minutes=30))
    records = [
        record("whole-second"),  # no microseconds: orjson leaves the fraction out
        record("micro", started_at=T0 + timedelta(microseconds=1), finished_at=T0 + timedelta(microseconds=999_999)),
        record("offset", started_at=datetime(2025, 6, 1, 17, 30, 0, 250, tzinfo=east)),
        record("empty", labels={}, savings_micro_usd={}, ttft_ms=None, key_id=None),
        record("unicode", labels={"région": "é ✓", "quote": 'a "b"\n'}, stream=True, batch=True, ttft_ms=0.5),
        record("big", cost_micro_usd=2**53 + 1, counterfactual_micro_usd=2**62, latency_ms=1e-3),
    ]
    writer = make_writer()
    writer.open()
    for r in records:
        writer.submit(r)
    assert writer.flush(timeout=10)
    reference = f"sqlite:///{tmp_path / 'reference.db'}"
    migrate(reference)
    engine = make_engine(reference)
    with engine.begin() as conn:
        conn.execute(ledger_table.insert(), [r.to_row() for r in records])
    engine.dispose()
    columns = ", ".join(c.name for c in ledger_table.columns if c.name != "id")

    def raw(url: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return conn.execute(f"SELECT {columns} FROM ledger ORDER BY request_id").fetchall()

    fast, portable = raw(db), raw(reference)
    assert len(fast) == len(records)
    assert fast == portable


def test_batches_group_inserts_into_few_transactions(
    make_writer: Callable[..., LedgerWriter], reader: LedgerReader
) -> None:
    writer = make_writer(batch_size=100, flush_interval_s=5.0)
    commits: list[int] = []
    event.listen(writer.engine, "commit", lambda conn: commits.append(1))
    writer.open()
    # let the start-up migration finish so only ledger inserts are counted
    writer.submit(record("warmup"))
    assert writer.flush(timeout=10)
    commits.clear()
    for i in range(1000):
        writer.submit(record(i))
    assert writer.flush(timeout=10)
    assert reader.count() == 1001
    assert len(commits) <= 12  # 1000 / 100, give or take a partial batch at each end


def test_flush_interval_writes_a_partial_batch_without_being_asked(
    make_writer: Callable[..., LedgerWriter], reader: LedgerReader
) -> None:
    writer = make_writer(batch_size=1000, flush_interval_s=0.05)
    writer.open()
    for i in range(3):
        writer.submit(record(i))
    wait_for(lambda: reader.count() == 3)


def test_same_request_id_is_stored_once(
    make_writer: Callable[..., LedgerWriter], reader: LedgerReader, db: str, tmp_path: Path
) -> None:
    writer = make_writer()
    writer.open()
    writer.submit(record(1, cost_micro_usd=100))
    writer.submit(record(1, cost_micro_usd=999))  # same batch
    assert writer.flush(timeout=10)
    writer.submit(record(1, cost_micro_usd=555))  # later batch
    assert writer.flush(timeout=10)
    # and through a second writer (another replica, or a restart replaying its journal)
    with LedgerWriter(db, journal_path=tmp_path / "other.journal") as other:
        other.submit(record(1, cost_micro_usd=777))
    assert reader.count() == 1
    stored = reader.get("req_1")
    assert stored is not None and stored.cost_micro_usd == 100
    stats = writer.stats()
    assert stats.written == 3 and stats.duplicates == 2


def test_close_loses_nothing(make_writer: Callable[..., LedgerWriter], reader: LedgerReader) -> None:
    writer = make_writer(batch_size=200, flush_interval_s=0.25)
    writer.open()
    for i in range(5000):
        writer.submit(record(i, cost_micro_usd=i))
    writer.close()
    assert reader.count() == 5000
    totals = reader.totals()
    assert totals["count"] == 5000
    assert totals["cost_micro_usd"] == sum(range(5000))
    assert totals["input_tokens"] == 5000 * 1000
    assert writer.stats().written == 5000 and writer.stats().journaled == 0


def test_submit_from_many_threads(make_writer: Callable[..., LedgerWriter], reader: LedgerReader) -> None:
    writer = make_writer()
    writer.open()

    def work(t: int) -> None:
        for i in range(500):
            writer.submit(record(f"{t}_{i}"))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.close()
    assert reader.count() == 4000
    assert writer.stats().submitted == 4000


def test_async_callers(make_writer: Callable[..., LedgerWriter], reader: LedgerReader) -> None:
    async def main() -> None:
        writer = make_writer()
        async with writer:
            for i in range(300):
                writer.submit(record(i))
            assert await writer.aflush()
            assert reader.count() == 300
            writer.submit(record("last"))
        assert reader.get("req_last") is not None

    asyncio.run(main())


def test_from_settings(tmp_path: Path, db: str) -> None:
    settings = LedgerSettings(url=db, queue_size=7, batch_size=3, journal_path=str(tmp_path / "j"))
    writer = LedgerWriter.from_settings(settings)
    with writer:
        for i in range(10):
            writer.submit(record(i))
    assert writer.journal.path == tmp_path / "j"
    with LedgerReader(db) as r:
        assert r.count() == 10


# -- durability -----------------------------------------------------------------------------------------


class SqliteLock:
    """Hold SQLite's write lock from another connection: the ledger's real "database unavailable" case."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN EXCLUSIVE")
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("COMMIT")
        self.conn.close()


def test_outage_journals_then_replays_when_the_database_returns(
    make_writer: Callable[..., LedgerWriter], reader: LedgerReader, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}?timeout=0.05"
    writer = make_writer(url=url, batch_size=10)
    writer.open()
    writer.submit(record("before"))
    assert writer.flush(timeout=10)
    with SqliteLock(tmp_path / "ledger.db") as locked:
        for i in range(25):
            writer.submit(record(i))
        assert writer.flush(timeout=10)
        stats = writer.stats()
        assert stats.journaled == 25 and stats.write_errors >= 1 and stats.journal_pending == 25
        assert "locked" in (stats.last_error or "")
        assert locked.execute("SELECT count(*) FROM ledger").fetchone() == (1,)
        lines = writer.journal.path.read_text().splitlines()
        assert len(lines) == 25
    # lock released: the next idle tick after retry_interval_s replays the journal, no new traffic needed
    wait_for(lambda: writer.stats().journal_pending == 0)
    assert reader.count() == 26
    stats = writer.stats()
    assert stats.replayed == 25 and stats.lost == 0 and stats.database_up
    assert not writer.journal.path.exists() and not writer.journal.replay_path.exists()
    stored = reader.get("req_7")
    assert stored == record(7)


def test_journal_survives_a_restart_and_is_replayed_at_start(
    make_writer: Callable[..., LedgerWriter], reader: LedgerReader, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}?timeout=0.05"
    first = make_writer(url=url)
    first.open()
    with SqliteLock(tmp_path / "ledger.db"):
        for i in range(40):
            first.submit(record(i))
        first.close()  # database still down: everything goes to the journal, nothing is lost
        assert first.stats().journaled == 40
        first.submit(record("late"))  # after close: journaled for the next start
        assert first.stats().spilled == 1
    assert reader.count() == 0
    second = make_writer()
    second.open()
    wait_for(lambda: reader.count() == 41)
    assert second.stats().replayed == 41


def test_queue_full_spills_to_the_journal(make_writer: Callable[..., LedgerWriter], reader: LedgerReader) -> None:
    writer = make_writer(queue_size=5)
    for i in range(20):  # not started yet: nothing drains the queue
        writer.submit(record(i))
    stats = writer.stats()
    assert stats.queue_depth == 5 and stats.spilled == 15 and stats.journaled == 15
    writer.open()
    wait_for(lambda: reader.count() == 20)
    writer.close()
    stats = writer.stats()
    assert stats.written == 5 and stats.replayed == 15 and stats.journal_pending == 0


def test_invalid_records_are_kept_aside_not_retried_forever(
    make_writer: Callable[..., LedgerWriter], reader: LedgerReader
) -> None:
    writer = make_writer()
    writer.open()
    writer.submit(record(1))
    writer.submit(record("bad", model=None))  # NOT NULL violation: the record is at fault, not the database
    writer.submit(record(2))
    assert writer.flush(timeout=10)
    assert reader.count() == 2
    stats = writer.stats()
    assert stats.rejected == 1 and stats.journal_pending == 0 and stats.database_up
    assert "req_bad" in writer.journal.bad_path.read_text()


def test_torn_journal_line_is_moved_aside(make_writer: Callable[..., LedgerWriter], reader: LedgerReader) -> None:
    writer = make_writer()
    writer.journal.append([record(1).to_json(), record(2).to_json()])
    with writer.journal.path.open("ab") as fh:
        fh.write(b'{"request_id": "req_torn", "sta')  # power cut mid-write
    writer.journal.close()
    writer.journal.append([record(3).to_json()])  # after a restart: must not be glued onto the torn line
    writer.open()
    wait_for(lambda: reader.count() == 3)
    wait_for(lambda: writer.stats().journal_pending == 0)
    assert "req_torn" in writer.journal.bad_path.read_text()


# -- reading --------------------------------------------------------------------------------------------


def test_reader_rows_since_and_totals(make_writer: Callable[..., LedgerWriter], reader: LedgerReader) -> None:
    writer = make_writer()
    with writer:
        for i in range(10):
            writer.submit(
                record(
                    i,
                    started_at=T0 + timedelta(hours=i),
                    finished_at=T0 + timedelta(hours=i, seconds=1),
                    cost_micro_usd=1,
                    counterfactual_micro_usd=3,
                    savings_micro_usd={"exact_cache": 1, "pruning": 1},
                )
            )
    rows = reader.rows(since=T0 + timedelta(hours=7))
    assert [r.request_id for r in rows] == ["req_7", "req_8", "req_9"]
    assert all(r.started_at.tzinfo is not None for r in rows)
    assert reader.totals(since=T0 + timedelta(hours=5))["count"] == 5
    totals = reader.totals()
    assert totals["cost_micro_usd"] == 10 and totals["counterfactual_micro_usd"] == 30
    assert totals["saved_micro_usd"] == 20
    assert reader.savings_by_stage() == {"exact_cache": 10, "pruning": 10}
    assert len(reader.rows(limit=4)) == 4
