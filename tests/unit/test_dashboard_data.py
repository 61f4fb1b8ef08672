"""The dashboard's data layer on real SQLite ledgers: rollups kept by the writer agree with the raw rows."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from clawback.dashboard.data import Filters, LedgerQueries, TimeRange, percentile_from_histogram
from clawback.storage import LedgerReader, LedgerRecord, LedgerWriter, make_engine
from clawback.storage.migrate import migrate_engine
from clawback.storage.rollup_models import (
    entity_key_total_table,
    entity_table,
    entity_total_table,
    savings_table,
    usage_table,
)

T0 = datetime(2025, 6, 1, 0, 0, 0, tzinfo=UTC)
RANGE = TimeRange(T0, T0 + timedelta(days=2))


def rec(i: int, **overrides: Any) -> LedgerRecord:
    started = T0 + timedelta(minutes=7 * i)
    values: dict[str, Any] = {
        "request_id": f"r{i}",
        "started_at": started,
        "finished_at": started + timedelta(milliseconds=400),
        "model": ("claude-sonnet-4-5", "claude-haiku-4-5")[i % 2],
        "endpoint": "messages",
        "status": 200,
        "latency_ms": 100.0 + 10 * (i % 50),
        "ttft_ms": 50.0,
        "key_id": f"k{i % 3}",
        "team": ("sales", "support")[i % 2],
        "feature": ("lead-chat", "faq", "scoring")[i % 3],
        "user": f"u{i % 7}",
        "session_id": f"s{i % 11}",
        "input_tokens": 1000 + i,
        "output_tokens": 100,
        "cache_read_input_tokens": 500 if i % 4 == 0 else 0,
        "cache_write_5m_input_tokens": 200 if i % 5 == 0 else 0,
        "cost_micro_usd": 4000 + 3 * i,
        "counterfactual_micro_usd": 6000 + 3 * i,
        "savings_micro_usd": {"prompt_cache": 1500, "pruning": 500},
        "cache_status": ("miss", "hit", "bypass")[i % 3],
        "labels": {"cohort": ("treated", "holdout")[i % 2]} if i % 10 else {},
    }
    if i % 17 == 0:
        values.update(status=529, error_type="overloaded_error", cost_micro_usd=0, counterfactual_micro_usd=0,
                      savings_micro_usd={})  # fmt: skip
    values.update(overrides)
    return LedgerRecord(**values)


RECORDS = [rec(i) for i in range(300)]


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with LedgerWriter(url, journal_path=tmp_path / "j", flush_interval_s=0.01, batch_size=32) as writer:
        for r in RECORDS:
            writer.submit(r)
        for r in RECORDS[:40]:  # retried requests: stored once, counted once
            writer.submit(r)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def test_totals_match_the_raw_rows(engine: Engine) -> None:
    q = LedgerQueries(engine)
    raw = LedgerReader(engine).totals()
    got = q.totals(RANGE)
    assert raw["count"] == len(RECORDS) == got["requests"]
    for name in ("cost_micro_usd", "counterfactual_micro_usd", "input_tokens", "output_tokens",
                 "cache_read_input_tokens", "cache_write_5m_input_tokens", "saved_micro_usd"):  # fmt: skip
        assert got[name] == raw[name], name
    assert got["errors"] == sum(1 for r in RECORDS if r.status >= 400)


def test_daily_grain_agrees_with_hourly(engine: Engine) -> None:
    q = LedgerQueries(engine)
    week = TimeRange(T0 - timedelta(days=2), T0 + timedelta(days=5))
    assert week.period == "day" and RANGE.period == "hour"
    assert q.totals(week) == q.totals(RANGE)


def test_spend_series_split_by_dimension(engine: Engine) -> None:
    q = LedgerQueries(engine)
    series = q.spend_series(RANGE, by="team")
    assert set(series["group"]) == {"sales", "support"}
    expected = sum(r.cost_micro_usd for r in RECORDS if r.team == "sales") / 1e6
    assert series[series["group"] == "sales"]["cost_usd"].sum() == pytest.approx(expected)
    # one bucket per hour that had traffic
    hours = {r.started_at.replace(minute=0) for r in RECORDS}
    assert set(series["bucket"]) == hours
    with pytest.raises(ValueError, match="cannot split"):
        q.spend_series(RANGE, by="colour")


def test_filters_narrow_every_query(engine: Engine) -> None:
    q = LedgerQueries(engine)
    only = Filters(models=("claude-haiku-4-5",), features=("faq",))
    mine = [r for r in RECORDS if r.model == "claude-haiku-4-5" and r.feature == "faq"]
    assert q.totals(RANGE, only)["cost_micro_usd"] == sum(r.cost_micro_usd for r in mine)
    saved = q.savings_by_stage(RANGE, only).set_index("stage")["saved_usd"]
    assert saved["pruning"] == pytest.approx(sum(r.savings_micro_usd.get("pruning", 0) for r in mine) / 1e6)


def test_savings_by_stage_match_the_ledger(engine: Engine) -> None:
    q = LedgerQueries(engine)
    raw = LedgerReader(engine).savings_by_stage()
    got = q.savings_by_stage(RANGE).set_index("stage")["saved_usd"].to_dict()
    assert got == pytest.approx({k: v / 1e6 for k, v in raw.items()})
    series = q.savings_series(RANGE)
    assert series["saved_usd"].sum() == pytest.approx(sum(raw.values()) / 1e6)


def test_token_series_by_kind(engine: Engine) -> None:
    tokens = LedgerQueries(engine).token_series(RANGE)
    by_kind = tokens.groupby("kind")["tokens"].sum()
    assert by_kind["input"] == sum(r.input_tokens for r in RECORDS)
    assert by_kind["cache read"] == sum(r.cache_read_input_tokens for r in RECORDS)
    assert by_kind["cache write 5m"] == sum(r.cache_write_5m_input_tokens for r in RECORDS)
    assert by_kind["cache write 1h"] == 0


def test_cache_hit_rates(engine: Engine) -> None:
    summary = LedgerQueries(engine).cache_summary(RANGE).set_index("cache")
    hits = sum(1 for r in RECORDS if r.cache_status == "hit")
    eligible = sum(1 for r in RECORDS if r.cache_status in ("hit", "miss"))
    assert summary.loc["exact cache", "hit_rate"] == pytest.approx(hits / eligible)
    msgs = [r for r in RECORDS if r.cache_status != "bypass"]
    prompt = sum(r.input_tokens + r.cache_read_input_tokens + r.cache_write_5m_input_tokens for r in msgs)
    read = sum(r.cache_read_input_tokens for r in msgs)
    assert summary.loc["prompt cache (tokens)", "hit_rate"] == pytest.approx(read / prompt)
    series = LedgerQueries(engine).cache_series(RANGE)
    assert {"prompt cache", "exact cache"} <= set(series["cache"])


def test_semantic_cache_appears_once_it_records_hits(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sem.db'}"
    with LedgerWriter(url, journal_path=tmp_path / "j", flush_interval_s=0.01) as writer:
        for i in range(10):
            writer.submit(rec(i, cache_status="semantic-hit" if i < 3 else "miss"))
    engine = make_engine(url)
    summary = LedgerQueries(engine).cache_summary(RANGE).set_index("cache")
    assert summary.loc["semantic cache", "hit_rate"] == pytest.approx(0.3)
    engine.dispose()


def test_latency_percentiles_within_a_bucket(engine: Engine) -> None:
    lat = LedgerQueries(engine).latency(RANGE).set_index("group")
    values = sorted(r.latency_ms for r in RECORDS if r.model == "claude-sonnet-4-5")
    true_p50 = values[len(values) // 2]
    p50 = lat.loc["claude-sonnet-4-5", "p50_ms"]
    assert true_p50 / 1.6 <= p50 <= true_p50 * 1.6
    assert lat.loc["claude-sonnet-4-5", "mean_ms"] == pytest.approx(sum(values) / len(values))
    assert percentile_from_histogram([0] * 27, 0.5) is None
    series = LedgerQueries(engine).latency_series(RANGE)
    assert set(series["percentile"]) == {"p50", "p95", "p99"}


def test_error_rates(engine: Engine) -> None:
    errors = LedgerQueries(engine).error_series(RANGE)
    got = errors[errors["error_type"] == "overloaded_error"]["errors"].sum()
    assert got == sum(1 for r in RECORDS if r.error_type == "overloaded_error") > 0


def test_cohort_comparison_with_confidence_intervals(engine: Engine) -> None:
    cohorts = LedgerQueries(engine).cohorts(RANGE).set_index("cohort")
    assert set(cohorts.index) == {"treated", "holdout"}
    holdout = [r for r in RECORDS if r.labels.get("cohort") == "holdout"]
    mean = sum(r.cost_micro_usd for r in holdout) / len(holdout)
    assert cohorts.loc["holdout", "requests"] == len(holdout)
    assert cohorts.loc["holdout", "cost_per_request_usd"] == pytest.approx(mean / 1e6)
    import statistics

    sd = statistics.stdev(r.cost_micro_usd for r in holdout)
    assert cohorts.loc["holdout", "ci95_usd"] == pytest.approx(1.96 * sd / len(holdout) ** 0.5 / 1e6, rel=1e-6)


def test_no_cohorts_without_flags(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'plain.db'}"
    with LedgerWriter(url, journal_path=tmp_path / "j", flush_interval_s=0.01) as writer:
        writer.submit(rec(1, labels={}))
    engine = make_engine(url)
    assert LedgerQueries(engine).cohorts(RANGE).empty
    engine.dispose()


def test_top_spenders_and_their_trend(engine: Engine) -> None:
    q = LedgerQueries(engine)
    top = q.top_entities(RANGE, "user", limit=3)
    spend: dict[str, int] = {}
    for r in RECORDS:
        spend[r.user or ""] = spend.get(r.user or "", 0) + r.cost_micro_usd
    best = sorted(spend.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert top["value"].tolist() == [u for u, _ in best]
    assert top["cost_usd"].tolist() == pytest.approx([c / 1e6 for _, c in best])
    assert (top["first_half_usd"] + top["second_half_usd"]).tolist() == pytest.approx(top["cost_usd"].tolist())
    conv = q.top_entities(RANGE, "session", limit=20)
    assert len(conv) == 11
    series = q.entity_series(RANGE, "session", conv["value"].tolist()[:2])
    assert set(series["value"]) == set(conv["value"].tolist()[:2])


def test_options_and_span(engine: Engine) -> None:
    q = LedgerQueries(engine)
    options = q.options(RANGE)
    assert options["team"] == ["sales", "support"]
    assert options["cohort"] == ["holdout", "treated"]
    assert options["model"] == sorted({r.model for r in RECORDS})
    assert options["key_id"] == sorted({r.key_id or "" for r in RECORDS} - {""})
    assert options["feature"] == sorted({r.feature or "" for r in RECORDS} - {""})
    one_hour = TimeRange(T0, T0 + timedelta(minutes=30))  # r0-r4: two models, three keys and features
    assert q.options(one_hour)["key_id"] == ["k0", "k1", "k2"]
    assert q.options(one_hour)["cohort"] == ["holdout", "treated"]
    far = TimeRange(T0 + timedelta(days=30), T0 + timedelta(days=31))
    assert q.options(far) == {c: [] for c in ("model", "key_id", "team", "feature", "cohort")}
    span = q.data_span()
    assert span is not None and span[0] == T0


def test_migration_backfills_rows_written_before_the_rollups(tmp_path: Path) -> None:
    """A ledger at revision 0005 (no rollups) migrated to head: the backfill equals what the writer keeps."""
    old = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate_engine(old, "0005_flags")
    from clawback.storage.ledger import ledger_table

    with old.begin() as conn:
        conn.execute(ledger_table.insert(), [r.to_row() for r in RECORDS])
    migrate_engine(old)
    kept = f"sqlite:///{tmp_path / 'kept.db'}"
    with LedgerWriter(kept, journal_path=tmp_path / "j2", flush_interval_s=0.01) as writer:
        for r in RECORDS:
            writer.submit(r)
    new = make_engine(kept)
    for table in (usage_table, savings_table, entity_table, entity_total_table, entity_key_total_table):
        columns = [c for c in table.c if c.name != "id"]
        stmt = select(*columns).order_by(*columns)
        with old.connect() as a, new.connect() as b:
            left, right = a.execute(stmt).all(), b.execute(stmt).all()
        assert left == right and left, table.name
    old.dispose()
    new.dispose()


def test_rollup_rows_far_fewer_than_ledger_rows(engine: Engine) -> None:
    with engine.connect() as conn:
        daily = conn.execute(select(func.count()).where(usage_table.c.period == "day")).scalar_one()
    assert daily < len(RECORDS) / 2
