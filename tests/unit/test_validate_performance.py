"""``clawback validate-performance`` on seeded ledgers: a baseline saved, the same traffic passes, a slower and
dearer week is flagged with the figures named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from typer.testing import CliRunner

from clawback.cli import app
from clawback.storage import LedgerWriter
from tests.unit.test_dashboard_data import rec

END = datetime(2025, 7, 1, tzinfo=UTC)


def seed(url: str, tmp_path: Path, *, start: datetime, latency: float, cost: int, errors: bool = False) -> None:
    with LedgerWriter(url, journal_path=tmp_path / "j", flush_interval_s=0.01) as writer:
        for i in range(300):
            t = start + timedelta(minutes=30 * i)
            writer.submit(rec(i, request_id=f"{start:%Y%m%d}-{i}", started_at=t, finished_at=t + timedelta(seconds=1),
                              latency_ms=latency + i % 7, cost_micro_usd=cost, status=529 if errors and i % 10 == 0
                              else 200, error_type=None))  # fmt: skip


def test_baseline_then_regression(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    seed(url, tmp_path, start=END - timedelta(days=14), latency=400, cost=5000)
    runner = CliRunner()
    base = tmp_path / "baseline.json"
    week1 = (END - timedelta(days=7)).strftime("%Y-%m-%d")
    r = runner.invoke(app, ["validate-performance", "--ledger", url, "--until", week1, "--save-baseline", str(base)])
    assert r.exit_code == 0, r.output
    saved = orjson.loads(base.read_bytes())
    assert saved["requests"] == 300  # 6.25 days of half-hourly requests, inside the week
    assert saved["cost_per_request_micro_usd"] == 5000
    assert 250 <= saved["latency_p50_ms"] <= 640
    # the same traffic again: no regression
    same = runner.invoke(app, ["validate-performance", "--ledger", url, "--until", week1, "--baseline", str(base)])
    assert same.exit_code == 0, same.output
    # a week later: twice as slow, 30 % dearer, errors
    seed(url, tmp_path, start=END - timedelta(days=7), latency=900, cost=6500, errors=True)
    worse = runner.invoke(app, ["validate-performance", "--ledger", url, "--until", "2025-07-01", "--baseline",
                                str(base), "--json"])  # fmt: skip
    assert worse.exit_code == 1
    result = orjson.loads(worse.stdout.splitlines()[0])
    flagged = {row["name"] for row in result["figures"] if row["regression"]}
    assert {"latency_p50_ms", "latency_p95_ms", "cost_per_request_micro_usd", "error_rate"} <= flagged
    assert "requests_per_hour" not in flagged


def test_bad_baseline_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    seed(url, tmp_path, start=END - timedelta(days=3), latency=100, cost=10)
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    r = CliRunner().invoke(app, ["validate-performance", "--ledger", url, "--baseline", str(bad)])
    assert r.exit_code == 2 and "cannot read the baseline" in r.output
