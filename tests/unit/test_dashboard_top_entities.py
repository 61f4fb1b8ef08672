"""The largest spenders read through the entity totals equal a plain GROUP BY over the raw ledger rows.

``LedgerQueries.top_entities`` ranks from the running totals (``ledger_rollup_entity_total``) when their
bound rules out every other entity, and groups the whole range otherwise; both must give exactly what
summing the raw rows of the range gives, for short-lived entities (conversations), long-lived ones (users
over a range shorter than their history), several keys per entity, ties, zero and negative costs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from clawback.dashboard.data import LedgerQueries, TimeRange
from clawback.storage import LedgerRecord, LedgerWriter, make_engine
from clawback.storage.ledger import ledger_table
from clawback.storage.migrate import migrate_engine
from clawback.storage.rollup_models import entity_key_total_table, entity_total_table

END = datetime(2025, 7, 3, 15, 30, tzinfo=UTC)  # a Thursday afternoon
DAYS = 35


def spenders(n: int = 3000, seed: int = 7) -> list[LedgerRecord]:
    """Conversations of 1-8 requests within a few hours; 80 users and 30 agents active throughout; costs from
    a small set (ties), some zero, a few negative (refunds); a user's requests under one or two keys."""
    rng = random.Random(seed)
    start = END - timedelta(days=DAYS)
    out: list[LedgerRecord] = []
    conversation = 0
    while len(out) < n:
        conversation += 1
        user = rng.randrange(80)
        at = start + timedelta(seconds=rng.randrange(DAYS * 86400))
        agent = f"a{rng.randrange(30)}" if rng.random() < 0.4 else None
        for _ in range(rng.randint(1, 8)):
            at += timedelta(minutes=rng.randint(1, 90))
            if at >= END:
                break
            i = len(out)
            cost = rng.choice([0, 1000, 2000, 2000, 5000, 8000, 13000])
            if rng.random() < 0.01:
                cost = -rng.choice([1000, 20000])
            out.append(
                LedgerRecord(
                    request_id=f"t{i}",
                    started_at=at,
                    finished_at=at + timedelta(milliseconds=300),
                    model="claude-haiku-4-5",
                    endpoint="messages",
                    status=529 if i % 23 == 0 else 200,
                    latency_ms=300.0,
                    key_id=f"k{(user + (i % 2 if user % 5 == 0 else 0)) % 3}",
                    user=f"u{user}",
                    session_id=f"s{conversation}",
                    agent_id=agent,
                    input_tokens=100 + i % 7,
                    output_tokens=10,
                    cost_micro_usd=cost,
                    counterfactual_micro_usd=max(cost, 0) + 500,
                )
            )
    return out


RECORDS = spenders()
FIELD = {"user": "user", "session": "session_id", "agent": "agent_id"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    path: Path = tmp_path_factory.mktemp("top")
    url = f"sqlite:///{path / 'ledger.db'}"
    with LedgerWriter(url, journal_path=path / "j", flush_interval_s=0.01, batch_size=32) as writer:
        for r in RECORDS:
            writer.submit(r)
        for r in RECORDS[:100]:  # retries: stored once, counted once
            writer.submit(r)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def _bucket(stamp: datetime, period: str) -> datetime:
    day = stamp.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if period == "week" else day


def reference(tr: TimeRange, kind: str, limit: int, keys: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The top spenders summed from the raw records: the range's buckets are those starting in [the day (or
    Monday) of its start, its end), the halves split at its middle in the same way."""
    period = "day" if tr.end - tr.start <= timedelta(days=14) else "week"
    first, end = _bucket(tr.start, period), tr.end
    middle = tr.start + (tr.end - tr.start) / 2
    second_first = _bucket(middle, period)
    sums: dict[str, list[int]] = {}
    for r in RECORDS:
        value = getattr(r, FIELD[kind])
        b = _bucket(r.started_at, period)
        if not value or not first <= b < end or (keys and r.key_id not in keys):
            continue
        m = sums.setdefault(value, [0, 0, 0, 0, 0, 0, 0])
        for i, v in enumerate((1, int(r.status >= 400), r.input_tokens + r.output_tokens, r.cost_micro_usd,
                               r.counterfactual_micro_usd)):  # fmt: skip
            m[i] += v
        m[5] += r.cost_micro_usd if b < middle else 0
        m[6] += r.cost_micro_usd if b >= second_first else 0
    ranked = sorted(sums.items(), key=lambda kv: (-kv[1][3], kv[0]))[:limit]
    return [{"value": v, "requests": m[0], "errors": m[1], "tokens": m[2], "cost": m[3], "counterfactual": m[4],
             "first": m[5], "second": m[6]} for v, m in ranked]  # fmt: skip


RANGES = [
    TimeRange(END - timedelta(days=days + back), END - timedelta(days=back))
    for days, back in (
        (1, 0),
        (2, 0),
        (3, 0),
        (4, 0),
        (7, 0),
        (10, 0),
        (14, 0),
        (15, 0),
        (21, 0),
        (30, 0),
        (45, 0),
        (7, 10),
        (20, 9),
        (3, 33),
    )
]


def _check(got: Any, want: list[dict[str, Any]]) -> None:
    assert got["value"].tolist() == [w["value"] for w in want]
    assert got["requests"].tolist() == [w["requests"] for w in want]
    assert got["errors"].tolist() == [w["errors"] for w in want]
    assert got["tokens"].tolist() == [w["tokens"] for w in want]
    assert got["cost_usd"].tolist() == pytest.approx([w["cost"] / 1e6 for w in want])
    assert got["saved_usd"].tolist() == pytest.approx([(w["counterfactual"] - w["cost"]) / 1e6 for w in want])
    assert got["first_half_usd"].tolist() == pytest.approx([w["first"] / 1e6 for w in want])
    assert got["second_half_usd"].tolist() == pytest.approx([w["second"] / 1e6 for w in want])


@pytest.fixture
def grouped(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Which way each ``top_entities`` call took: "group" (the plain GROUP BY), nothing when the entity
    totals gave the candidates."""
    calls: list[str] = []
    original = LedgerQueries._top_by_group

    def spy(self: LedgerQueries, *args: Any) -> Any:
        calls.append("group")
        return original(self, *args)

    monkeypatch.setattr(LedgerQueries, "_top_by_group", spy)
    return calls


@pytest.mark.parametrize("budget", [1000, 25])
@pytest.mark.parametrize("kind", ["session", "user", "agent"])
def test_top_entities_equal_the_raw_rows(
    engine: Engine, kind: str, budget: int, grouped: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(LedgerQueries, "CANDIDATE_BUDGET", budget)
    q = LedgerQueries(engine)
    ways = set()
    for tr in RANGES:
        for limit in (1, 3, 10, 70):
            grouped.clear()
            _check(q.top_entities(tr, kind, limit=limit), reference(tr, kind, limit))
            ways.add(grouped[0] if grouped else "totals")
            if kind == "session":  # short-lived: the totals settle it, whatever the range
                assert not grouped, (tr, limit)
    assert "totals" in ways


def test_both_ways_are_taken(engine: Engine, grouped: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The totals alone settle the conversations; users over 7 of 35 days (a history longer than the range)
    leave more candidates than a small budget: the GROUP BY, still exact."""
    q = LedgerQueries(engine)
    week = TimeRange(END - timedelta(days=7), END)
    _check(q.top_entities(week, "user"), reference(week, "user", 10))
    assert grouped == []  # 80 users: all candidates
    monkeypatch.setattr(LedgerQueries, "CANDIDATE_BUDGET", 25)
    _check(q.top_entities(week, "session"), reference(week, "session", 10))
    assert grouped == []
    _check(q.top_entities(week, "user"), reference(week, "user", 10))
    assert grouped == ["group"]


@pytest.mark.parametrize("budget", [1000, 25])
@pytest.mark.parametrize("keys", [("k1",), ("k1", "k2"), ("k0", "k1", "k2", "nobody")])
def test_key_filter_stays_exact(
    engine: Engine, keys: tuple[str, ...], budget: int, grouped: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a key filter the walk reads the per-key totals (their bound multiplied by the number of keys):
    still the sums of the raw rows of those keys."""
    from clawback.dashboard.data import Filters

    monkeypatch.setattr(LedgerQueries, "CANDIDATE_BUDGET", budget)
    q = LedgerQueries(engine)
    settled = 0
    for tr in RANGES:
        for kind in ("user", "session", "agent"):
            for limit in (1, 5):
                grouped.clear()
                _check(q.top_entities(tr, kind, Filters(keys=keys), limit=limit), reference(tr, kind, limit, keys))
                settled += not grouped
    assert settled


def test_totals_kept_by_the_writer(engine: Engine) -> None:
    """One row per entity across keys, and per entity and key: the sum of its non-negative costs, its first
    and last UTC day."""
    want: dict[tuple[str, str], list[Any]] = {}
    for r in RECORDS:
        day = _bucket(r.started_at, "day")
        for kind, attr in FIELD.items():
            value = getattr(r, attr)
            if value:
                w = want.setdefault((kind, value), [0, day, day])
                w[0] += max(r.cost_micro_usd, 0)
                w[1], w[2] = min(w[1], day), max(w[2], day)
    by_key: dict[tuple[str, str, str], list[Any]] = {}
    for r in RECORDS:
        day = _bucket(r.started_at, "day")
        for kind, attr in FIELD.items():
            value = getattr(r, attr)
            if value:
                w = by_key.setdefault((kind, r.key_id or "", value), [0, day, day])
                w[0] += max(r.cost_micro_usd, 0)
                w[1], w[2] = min(w[1], day), max(w[2], day)
    t, k = entity_total_table, entity_key_total_table
    with engine.connect() as conn:
        got = {(kind, v): [b, f, last] for kind, v, b, f, last in conn.execute(
            select(t.c.kind, t.c.value, t.c.cost_bound_micro_usd, t.c.first_day, t.c.last_day))}  # fmt: skip
        rows = conn.execute(
            select(k.c.kind, k.c.key_id, k.c.value, k.c.cost_bound_micro_usd, k.c.first_day, k.c.last_day)
        )
        got_by_key = {(kind, key, v): [b, f, last] for kind, key, v, b, f, last in rows}
    assert got == want
    assert got_by_key == by_key
    assert len(by_key) > len(want)  # some users have two keys
    assert any(r.cost_micro_usd < 0 for r in RECORDS)  # the bound is not the plain sum here


def test_empty_range_and_ledger(engine: Engine, tmp_path: Path) -> None:
    q = LedgerQueries(engine)
    far = TimeRange(END + timedelta(days=10), END + timedelta(days=11))
    assert q.top_entities(far, "session").empty
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    migrate_engine(empty)
    top = LedgerQueries(empty).top_entities(far, "user")
    assert top.empty and list(top.columns) == ["value", "requests", "errors", "tokens", "cost_usd", "saved_usd",
                                               "first_half_usd", "second_half_usd"]  # fmt: skip
    empty.dispose()


def test_a_ledger_not_yet_migrated_is_grouped(tmp_path: Path) -> None:
    """A dashboard newer than its ledger (at 0006: no entity totals) still ranks exactly, by the GROUP BY."""
    old = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate_engine(old, "0005_flags")
    with old.begin() as conn:
        conn.execute(ledger_table.insert(), [r.to_row() for r in RECORDS])
    migrate_engine(old, "0006_ledger_rollups")  # its backfill rolls the rows up
    week = TimeRange(END - timedelta(days=7), END)
    _check(LedgerQueries(old).top_entities(week, "session"), reference(week, "session", 10))
    old.dispose()
