"""The dashboard's pages under Streamlit's AppTest, on a seeded SQLite ledger (real rollups, real queries)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import clawback.dashboard.app as app_module
from clawback.dashboard.server import CONFIG_ENV
from clawback.storage import LedgerWriter
from tests.unit.test_dashboard_data import rec

APP = str(Path(app_module.__file__))


def seed(url: str, tmp_path: Path, *, cohorts: bool = True, count: int = 120) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    with LedgerWriter(url, journal_path=tmp_path / "seed.journal", flush_interval_s=0.01) as writer:
        for i in range(count):
            started = now - timedelta(hours=23) + timedelta(minutes=10 * i)
            r = rec(i, started_at=started, finished_at=started + timedelta(seconds=1))
            if not cohorts:
                r = rec(i, started_at=started, finished_at=started + timedelta(seconds=1), labels={})
            writer.submit(r)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    monkeypatch.setenv("CLAWBACK_LEDGER__URL", url)
    monkeypatch.delenv(CONFIG_ENV, raising=False)
    monkeypatch.delenv("CLAWBACK_DASHBOARD__PASSWORD", raising=False)
    yield url


def _charts(at: AppTest) -> list[str]:
    return [c.proto.id for c in at.get("plotly_chart")]


def test_pages_render_every_chart(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception, at.exception
    charts = at.get("plotly_chart")
    # spend, tokens, cache hit rates, savings, holdout, latency, errors, top users / conversations / agents? (no
    # agent ids in the seed): 9 charts
    assert len(charts) == 9, [c.proto for c in charts][:1]
    assert [m.label for m in at.metric] == ["Spend", "Without clawback", "Saved", "Requests", "Error rate"]
    assert at.metric[3].value == "120"
    assert "Holdout against treated traffic" in [h.value for h in at.subheader]
    assert any("No agent ids" in i.value for i in at.info)


def test_filters_and_split_change_the_figures(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path)
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.sidebar.multiselect[0].select("claude-haiku-4-5").run()  # models
    assert not at.exception
    assert at.metric[3].value == "60"
    at.sidebar.selectbox[1].select("team").run()  # split spend by team
    assert not at.exception
    spend = at.get("plotly_chart")[0]
    assert "Spend by team" in spend.proto.spec


def test_no_holdout_section_without_cohorts(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path, cohorts=False)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert "Holdout against treated traffic" not in [h.value for h in at.subheader]
    assert len(at.get("plotly_chart")) == 8


def test_component_tables_appear_once_they_hold_rows(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path)
    from sqlalchemy import text

    from clawback.storage import make_engine

    at = AppTest.from_file(APP, default_timeout=30).run()
    subheaders = [h.value for h in at.subheader]
    assert "Budgets" not in subheaders  # the budget tables exist (migration 0004), empty
    assert "Rollout (flags)" not in subheaders  # so do the flag tables (migration 0005)
    engine = make_engine(env)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO flags (name, mode, rollout, updated_at, updated_by, reason) "
                 "VALUES ('pruning', 'shadow', 10, '2026-12-01 00:00:00', 'tests', 'a rollout')")
        )  # fmt: skip
    engine.dispose()
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert "Rollout (flags)" in [h.value for h in at.subheader]


def test_empty_ledger_says_so(env: str) -> None:
    from clawback.storage import migrate

    migrate(env)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert any("ledger is empty" in i.value or "No " in i.value for i in at.info)


def test_password_gates_the_pages(env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(env, tmp_path)
    monkeypatch.setenv("CLAWBACK_DASHBOARD__PASSWORD", "s3cret")
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception
    assert not at.get("plotly_chart") and not at.metric
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert not at.get("plotly_chart")
    assert at.error and "Wrong password" in at.error[0].value
    at.text_input[0].input("s3cret")
    at.button[0].click().run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 9


def test_component_health_on_demand(env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clawback.serving import free_port

    seed(env, tmp_path)
    monkeypatch.setenv("CLAWBACK_UPSTREAM__URL", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    monkeypatch.setenv("CLAWBACK_GATEWAY__PORT", str(free_port()))
    at = AppTest.from_file(APP, default_timeout=60).run()
    at.button(key="health-check").click().run()
    assert not at.exception
    assert at.error and "upstream" in at.error[0].value and "gateway" in at.error[0].value
    table = next(d.value for d in at.dataframe if "part" in d.value.columns)
    assert dict(zip(table["part"], table["status"], strict=True))["ledger database"] == "ok"
