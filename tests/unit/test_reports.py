"""``clawback report`` on seeded SQLite ledgers: figures equal the ledger's, anomalies are found, files stand alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from clawback.cli import app
from clawback.dashboard.data import LedgerQueries
from clawback.pricing import from_micro_usd
from clawback.reports.period import build_report, find_anomalies
from clawback.reports.render import render_html, render_markdown
from clawback.storage import LedgerReader, LedgerWriter, make_engine
from tests.unit.test_dashboard_data import rec

NOW = datetime(2025, 7, 1, 12, 0, tzinfo=UTC)


def seed(tmp_path: Path) -> str:
    """Three weeks of traffic, a steady ~$0.1 a day, and one day (yesterday) at ten times that."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with LedgerWriter(url, journal_path=tmp_path / "j", flush_interval_s=0.01) as writer:
        n = 0
        for day in range(21):
            start = NOW - timedelta(days=21 - day)
            per_day = 200 if day == 20 else 20
            for i in range(per_day):
                t = start + timedelta(minutes=3 * i)
                writer.submit(rec(n, started_at=t, finished_at=t + timedelta(seconds=1), status=200, error_type=None))
                n += 1
    return url


def test_week_report_figures_equal_the_ledger(tmp_path: Path) -> None:
    url = seed(tmp_path)
    engine = make_engine(url)
    report = build_report(LedgerQueries(engine), "week", now=NOW)
    raw = LedgerReader(engine).rows(since=NOW - timedelta(days=7))
    assert report.requests == len(raw)
    assert report.cost == from_micro_usd(sum(r.cost_micro_usd for r in raw))
    assert report.counterfactual == from_micro_usd(sum(r.counterfactual_micro_usd for r in raw))
    assert sum(report.savings_by_stage.values()) == report.saved
    assert [a.day for a in report.anomalies] == [datetime(2025, 6, 30, tzinfo=UTC)]
    kinds = {s.kind for s in report.spenders}
    assert {"key_id", "team", "feature", "user", "session"} <= kinds
    text = render_markdown(report)
    assert "# clawback week report" in text and "## Anomalies" in text and "2025-06-30" in text
    assert f"${report.cost:,.4f}" in text
    engine.dispose()


def test_html_report_is_one_self_contained_file(tmp_path: Path) -> None:
    url = seed(tmp_path)
    engine = make_engine(url)
    report = build_report(LedgerQueries(engine), "month", now=NOW)
    page = render_html(report)
    assert page.count("<script") >= 4 and "<script src=" not in page  # plotly.js inline, nothing fetched
    printable = render_html(report, pdf_ready=True)
    assert "@page" in printable and '"staticPlot": true' in printable
    engine.dispose()


def test_report_command_writes_every_format(tmp_path: Path) -> None:
    url = seed(tmp_path)
    runner = CliRunner()
    for fmt, suffix in (("md", "md"), ("html", "html"), ("pdf-ready-html", "html")):
        out = tmp_path / f"report-{fmt}.{suffix}"
        result = runner.invoke(app, ["report", "--period", "month", "--format", fmt, "--ledger", url, "--out", str(out),
                                     "--until", "2025-07-01T12:00:00"])  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "$1.0336" in out.read_text()  # the anomalous day's spend
    result = runner.invoke(app, ["report", "--ledger", "sqlite:////nonexistent/dir/x.db"])
    assert result.exit_code == 1 and "cannot open the ledger" in result.output


def test_anomalies_need_a_history_and_a_real_jump() -> None:
    days = [datetime(2025, 6, d, tzinfo=UTC) for d in range(1, 21)]
    flat = pd.DataFrame({"day": days, "cost_micro_usd": [1000] * 19 + [1400]})
    assert find_anomalies(flat, days[0]) == []  # 1.4x a flat history is not an anomaly
    spike = pd.DataFrame({"day": days, "cost_micro_usd": [1000] * 19 + [5000]})
    found = find_anomalies(spike, days[0])
    assert [a.day for a in found] == [days[-1]] and found[0].median == Decimal("0.001")
    assert find_anomalies(pd.DataFrame({"day": days[:1], "cost_micro_usd": [9999]}), days[0]) == []
