"""The rollups and the dashboard's data layer on a real PostgreSQL (a scratch database per test).

Two writers (two gateway replicas) fill the same rollup rows at once: the additive upserts must count both.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from clawback.dashboard.data import Filters, LedgerQueries, TimeRange
from clawback.storage import LedgerReader, LedgerWriter, make_engine
from clawback.storage.ledger import ledger_table
from clawback.storage.migrate import migrate_engine
from clawback.storage.rollup_models import (
    entity_key_total_table,
    entity_table,
    entity_total_table,
    savings_table,
    usage_table,
)
from tests.integration.test_ledger_postgres import PgDatabase, admin  # noqa: F401  (the admin fixture)
from tests.unit.test_dashboard_data import RANGE, RECORDS, T0

pytest.importorskip("psycopg")


@pytest.fixture
def pg_engine(admin: Engine) -> Iterator[Engine]:  # noqa: F811
    database = PgDatabase(admin)
    database.create()
    engine = make_engine(database.url_str)
    try:
        yield engine
    finally:
        engine.dispose()
        database.drop()


def test_two_replicas_fill_the_same_rollup_rows(pg_engine: Engine, tmp_path: Path) -> None:
    halves = (RECORDS[0::2], RECORDS[1::2])
    writers = [
        LedgerWriter(pg_engine, journal_path=tmp_path / f"j{i}", flush_interval_s=0.01, batch_size=16) for i in range(2)
    ]

    def run(writer: LedgerWriter, records: list) -> None:  # type: ignore[type-arg]
        with writer:
            for r in records:
                writer.submit(r)
            for r in records[:20]:
                writer.submit(r)  # retries: stored once, counted once

    threads = [threading.Thread(target=run, args=(w, h)) for w, h in zip(writers, halves, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(w.stats().journal_pending == 0 and w.stats().lost == 0 for w in writers)
    q = LedgerQueries(pg_engine)
    raw = LedgerReader(pg_engine).totals()
    got = q.totals(RANGE)
    assert got["requests"] == raw["count"] == len(RECORDS)
    assert got["cost_micro_usd"] == raw["cost_micro_usd"]
    assert got["counterfactual_micro_usd"] == raw["counterfactual_micro_usd"]
    saved = q.savings_by_stage(RANGE).set_index("stage")["saved_usd"].to_dict()
    assert saved == pytest.approx({k: v / 1e6 for k, v in LedgerReader(pg_engine).savings_by_stage().items()})
    week = TimeRange(T0 - timedelta(days=1), T0 + timedelta(days=6))
    assert q.totals(week) == got
    assert q.options(RANGE)["team"] == ["sales", "support"]
    only = Filters(teams=("sales",))
    assert q.totals(RANGE, only)["cost_micro_usd"] == sum(r.cost_micro_usd for r in RECORDS if r.team == "sales")
    top = q.top_entities(RANGE, "session", limit=3)
    assert len(top) == 3 and top["cost_usd"].is_monotonic_decreasing
    assert not q.latency(RANGE).empty and not q.cohorts(RANGE).empty and not q.cache_summary(RANGE).empty
    assert q.data_span() is not None


def test_backfill_on_postgres_equals_the_writer(pg_engine: Engine, admin: Engine, tmp_path: Path) -> None:  # noqa: F811
    migrate_engine(pg_engine, "0005_flags")
    with pg_engine.begin() as conn:
        conn.execute(ledger_table.insert(), [r.to_row() for r in RECORDS])
    migrate_engine(pg_engine)
    other = PgDatabase(admin)
    other.create()
    kept = make_engine(other.url_str)
    try:
        with LedgerWriter(kept, journal_path=tmp_path / "j", flush_interval_s=0.01) as writer:
            for r in RECORDS:
                writer.submit(r)
        for table in (usage_table, savings_table, entity_table, entity_total_table, entity_key_total_table):
            columns = [c for c in table.c if c.name != "id"]
            stmt = select(*columns).order_by(*columns)
            with pg_engine.connect() as a, kept.connect() as b:
                left, right = a.execute(stmt).all(), b.execute(stmt).all()
            assert left == right and left, table.name
    finally:
        kept.dispose()
        other.drop()


def test_top_entities_on_postgres_equal_the_raw_rows(pg_engine: Engine, tmp_path: Path) -> None:
    """The largest spenders through the entity totals (and the GROUP BY past the candidate budget) on
    PostgreSQL equal the sums of the raw records, as on SQLite (``tests/unit/test_dashboard_top_entities``);
    two writers (two replicas) keep the totals together."""
    from clawback.dashboard.data import LedgerQueries as Q
    from tests.unit import test_dashboard_top_entities as spenders

    records = spenders.RECORDS
    writers = [LedgerWriter(pg_engine, journal_path=tmp_path / f"t{i}", flush_interval_s=0.01) for i in range(2)]

    def run(writer: LedgerWriter, part: list) -> None:  # type: ignore[type-arg]
        with writer:
            for r in part:
                writer.submit(r)

    threads = [threading.Thread(target=run, args=(w, records[i::2])) for i, w in enumerate(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    t = entity_total_table
    with pg_engine.connect() as conn:
        bounds = dict(conn.execute(select(t.c.value, t.c.cost_bound_micro_usd).where(t.c.kind == "session")).all())
    want: dict[str, int] = {}
    for r in records:
        want[r.session_id or ""] = want.get(r.session_id or "", 0) + max(r.cost_micro_usd, 0)
    assert bounds == want
    q = Q(pg_engine)
    for budget in (1000, 25):
        q.CANDIDATE_BUDGET = budget
        for tr in spenders.RANGES:
            for kind in ("session", "user", "agent"):
                spenders._check(q.top_entities(tr, kind, limit=10), spenders.reference(tr, kind, 10))
    for keys in (("k0",), ("k1", "k2")):
        for tr in spenders.RANGES[::3]:
            for kind in ("session", "user"):
                got = q.top_entities(tr, kind, Filters(keys=keys), limit=5)
                spenders._check(got, spenders.reference(tr, kind, 5, keys=keys))
