"""The ledger against a real PostgreSQL (127.0.0.1:5432, trust auth).

Each test gets its own temporary database ``clawback_test_<random>``, dropped afterwards, so parallel runs
never collide. Set ``CLAWBACK_TEST_PG_URL`` (a psycopg URL to an existing maintenance database) to point
elsewhere; without a reachable server the tests are skipped, with the reason.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from clawback.storage import (
    LedgerReader,
    LedgerRecord,
    LedgerWriter,
    current_revision,
    head_revision,
    make_engine,
    migrate,
)

pytest.importorskip("psycopg")

T0 = datetime(2025, 6, 1, 12, 0, 0, tzinfo=UTC)
CANDIDATES = [
    os.environ.get("CLAWBACK_TEST_PG_URL", ""),
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
]


def _admin_engine() -> Engine:
    errors = []
    for url in filter(None, CANDIDATES):
        engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return engine
        except Exception as exc:
            errors.append(f"{url}: {exc}".splitlines()[0])
            engine.dispose()
    pytest.skip("no PostgreSQL reachable: " + "; ".join(errors))


class PgDatabase:
    """A throwaway database that can be taken away and brought back (a real outage)."""

    def __init__(self, admin: Engine) -> None:
        self.admin = admin
        self.name = f"clawback_test_{secrets.token_hex(6)}"
        self.url = make_url(str(admin.url.render_as_string(hide_password=False))).set(database=self.name)

    @property
    def url_str(self) -> str:
        return self.url.render_as_string(hide_password=False)

    def create(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))

    def drop(self) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))


@pytest.fixture(scope="module")
def admin() -> Iterator[Engine]:
    engine = _admin_engine()
    yield engine
    engine.dispose()


@pytest.fixture
def pg(admin: Engine) -> Iterator[PgDatabase]:
    database = PgDatabase(admin)
    database.create()
    try:
        yield database
    finally:
        database.drop()


def record(i: int | str, **overrides: Any) -> LedgerRecord:
    values: dict[str, Any] = {
        "request_id": f"req_{i}",
        "started_at": T0,
        "finished_at": T0 + timedelta(seconds=1),
        "model": "claude-haiku-4-5",
        "endpoint": "messages",
        "status": 200,
        "latency_ms": 1000.0,
        "cost_micro_usd": 1,
        "counterfactual_micro_usd": 2,
    }
    values.update(overrides)
    return LedgerRecord(**values)


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_migration_on_postgres(pg: PgDatabase) -> None:
    # Two replicas booting at once: the advisory lock serialises them, both succeed.
    errors: list[BaseException] = []

    def run() -> None:
        try:
            migrate(pg.url_str)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    migrate(pg.url_str)  # idempotent
    engine = make_engine(pg.url_str)
    try:
        assert current_revision(engine) == head_revision() is not None
        insp = inspect(engine)
        columns = {c["name"]: c for c in insp.get_columns("ledger")}
        assert str(columns["cost_micro_usd"]["type"]) == "BIGINT"
        assert str(columns["labels"]["type"]) == "JSONB"
        assert getattr(columns["started_at"]["type"], "timezone", None) is True
        indexes = {ix["name"] for ix in insp.get_indexes("ledger")}
        assert "ix_ledger_started_at" in indexes
        assert not {"ix_ledger_key_id", "ix_ledger_model"} & indexes  # dropped by 0003
    finally:
        engine.dispose()


def test_writes_are_exact_idempotent_and_complete(pg: PgDatabase, tmp_path: Path) -> None:
    big = 9_007_199_254_740_993  # 2**53 + 1
    writer = LedgerWriter(pg.url_str, journal_path=tmp_path / "j", batch_size=250, flush_interval_s=0.05)
    with writer:
        writer.submit(record("money", cost_micro_usd=big, counterfactual_micro_usd=big + 1, labels={"k": "v"}))
        writer.submit(record("money", cost_micro_usd=5))  # duplicate request id, ignored
        for i in range(5000):
            writer.submit(record(i))
    stats = writer.stats()
    assert stats.written == 5002 and stats.duplicates == 1 and stats.journaled == 0
    with LedgerReader(pg.url_str) as reader:
        assert reader.count() == 5001
        stored = reader.get("req_money")
        assert stored is not None
        assert stored.cost_micro_usd == big and stored.labels == {"k": "v"}
        assert stored.started_at == T0 and stored.started_at.tzinfo is not None
        totals = reader.totals()
        assert totals["cost_micro_usd"] == big + 5000
        assert totals["counterfactual_micro_usd"] == big + 1 + 10_000


def test_dropped_database_journals_then_replays_when_it_is_back(pg: PgDatabase, tmp_path: Path) -> None:
    writer = LedgerWriter(pg.url_str, journal_path=tmp_path / "j", flush_interval_s=0.02, retry_interval_s=0.2)
    writer.open()
    try:
        writer.submit(record("before"))
        assert writer.flush(timeout=20)
        pg.drop()  # the database goes away, connections and all
        for i in range(50):
            writer.submit(record(i))
        assert writer.flush(timeout=20)
        stats = writer.stats()
        assert stats.journaled == 50 and stats.write_errors >= 1 and stats.journal_pending == 50
        pg.create()  # back, empty: the writer migrates it again and replays the journal
        wait_for(lambda: writer.stats().journal_pending == 0)
        with LedgerReader(pg.url_str) as reader:
            assert reader.count() == 50  # "before" went with the dropped database; the journal is complete
            assert reader.get("req_49") == record(49)
        assert writer.stats().replayed == 50 and writer.stats().lost == 0
    finally:
        writer.close(timeout=20)
