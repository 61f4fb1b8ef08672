"""The dashboard's pages under Streamlit's AppTest, on a seeded SQLite ledger (real rollups, real queries)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

import clawback.dashboard.app as app_module
from clawback.dashboard import charts
from clawback.dashboard.app import DEFAULT_SECTION, SECTIONS
from clawback.dashboard.data import LedgerQueries
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


#: A chart drawn on the server (``charts.to_svg``): its title's text, and each data mark's tooltip.
TITLE = re.compile(r'class="mark-text role-title-text"[^>]*><text[^>]*>([^<]*)</text>')
MARK_TITLE = re.compile(r"<path [^>]*><title>[^<]*[0-9][^<]*</title></path>")


def _charts(at: AppTest) -> dict[str, int]:
    """Each chart on the page: its title -> its data marks (a server-drawn SVG: marks whose tooltip names a
    number) or the rows of data it was sent (``st.vega_lite_chart``, charts beyond ``charts.SVG_MAX_POINTS``)."""
    out = {}
    for block in at.markdown:
        if 'class="clawback-chart"' in block.value:
            titles = TITLE.findall(block.value)
            assert len(titles) == 1, block.value[:200]
            out[html.unescape(titles[0])] = len(MARK_TITLE.findall(block.value))
    for chart in at.get("vega_lite_chart"):
        out[json.loads(chart.proto.spec)["title"]] = pa.ipc.open_stream(chart.proto.data.data).read_all().num_rows
    return out


def _open(at: AppTest, section: str) -> AppTest:
    at.segmented_control(key="view").set_value(section).run()
    assert not at.exception, at.exception
    return at


#: What each section draws on ``seed``'s ledger (no agent ids in it: two of the three largest-spender charts).
SECTION_CHARTS = {
    "Overview": {"Spend by model (dotted: without clawback)", "Savings by optimization"},
    "Tokens": {"Tokens by kind"},
    "Caches": {"Cache hit rates"},
    "Holdout": {"Holdout vs treated: cost per request (95 % CI)"},
    "Latency and errors": {"Latency percentiles", "Error rate"},
    "Largest spenders": {"Largest spenders by user", "Largest spenders by conversation"},
    "Budgets and rollout": set(),
}


def test_first_screen_is_the_kpis_and_the_overview(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception, at.exception
    assert [m.label for m in at.metric] == ["Spend", "Without clawback", "Saved", "Requests", "Error rate"]
    assert at.metric[3].value == "120"
    assert at.segmented_control(key="view").value == DEFAULT_SECTION == "Overview"
    charts = _charts(at)
    assert set(charts) == SECTION_CHARTS["Overview"], charts
    assert all(rows > 0 for rows in charts.values()), charts
    assert not at.get("plotly_chart")  # Plotly.js is the report's: ~0.9 s of browser script per chart
    assert not at.get("vega_lite_chart")  # drawn on the server: the browser loads no Vega chunk to show them


def test_a_chart_too_large_for_a_server_svg_is_left_to_the_browser(
    env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed(env, tmp_path)
    monkeypatch.setattr(charts, "SVG_MAX_POINTS", 0)  # every chart "too large": st.vega_lite_chart (canvas)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception, at.exception
    assert not [b for b in at.markdown if 'class="clawback-chart"' in b.value]
    sent = _charts(at)
    assert set(sent) == SECTION_CHARTS["Overview"] and all(rows > 0 for rows in sent.values()), sent


#: Streamlit's markdown renderer (1.67, ``StreamlitMarkdown``) loads its emoji plugin and table (0.27 MB) for a
#: source matching this (``01:16:31`` does) and its math plugin (KaTeX, 0.26 MB) for one holding a "$" pair.
EMOJI_SHORTCODE = re.compile(r":(?!material/|streamlit:)[\w+-][\w_+-]*:")


def test_first_screen_needs_neither_the_emoji_nor_the_math_plugin(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert not at.exception, at.exception
    sources = [e.value for kind in ("markdown", "caption", "title", "subheader", "info") for e in at.get(kind)]
    sources += [text for m in at.metric for text in (m.label, m.value)]
    assert any("refreshed" in text for text in sources)
    assert any('class="clawback-chart"' in text for text in sources)
    for text in sources:
        assert not EMOJI_SHORTCODE.search(text), text[:200]
        assert text.count("$") < 2, text[:200]


def test_every_section_draws_its_charts_with_data(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert list(SECTIONS) == list(SECTION_CHARTS)
    for section, titles in SECTION_CHARTS.items():
        charts = _charts(_open(at, section))
        assert set(charts) == titles, (section, charts)
        assert all(rows > 0 for rows in charts.values()), (section, charts)
        assert [m.label for m in at.metric][:1] == ["Spend"]  # the KPIs head every section
        names = {key.removeprefix("chart-") for key in _container_keys(at)}
        assert names <= set(SECTIONS[section][1]), (section, names)  # the keys the browser test waits for
        assert len(names) == len(charts), (section, names)
    _open(at, "Largest spenders")
    assert any("No agent ids" in i.value for i in at.info)


def _container_keys(at: AppTest) -> list[str]:
    """The keys ``chart-<name>`` of the containers holding charts (the browser's CSS classes ``st-key-...``)."""
    found: list[str] = []

    def walk(node: object) -> None:
        for child in getattr(node, "children", {}).values():
            key = getattr(child, "key", None)
            if isinstance(key, str) and key.startswith("chart-"):
                found.append(key)
            walk(child)

    walk(at.main)
    return found


def test_only_the_chosen_section_queries_the_ledger(env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(env, tmp_path)
    called: list[str] = []
    for name in ("token_series", "cache_series", "cohorts", "latency_series", "error_series", "top_entities",
                 "spend_series", "savings_by_stage"):  # fmt: skip
        original = getattr(LedgerQueries, name)

        def spy(self: LedgerQueries, *args: object, _name: str = name, _f: object = original, **kw: object) -> object:
            called.append(_name)
            return _f(self, *args, **kw)  # type: ignore[operator]

        monkeypatch.setattr(LedgerQueries, name, spy)
    at = AppTest.from_file(APP, default_timeout=30).run()
    assert sorted(called) == ["savings_by_stage", "spend_series"]
    called.clear()
    _open(at, "Latency and errors")
    assert sorted(called) == ["error_series", "latency_series"]


def test_a_section_opens_from_the_url(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path)
    at = AppTest.from_file(APP, default_timeout=30)
    at.query_params["view"] = "Tokens"
    at.run()
    assert not at.exception
    assert set(_charts(at)) == {"Tokens by kind"}


def test_filters_and_split_change_the_figures(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path)
    at = AppTest.from_file(APP, default_timeout=30).run()
    at.sidebar.multiselect[0].select("claude-haiku-4-5").run()  # models
    assert not at.exception
    assert at.metric[3].value == "60"
    at.sidebar.selectbox[1].select("team").run()  # split spend by team
    assert not at.exception
    assert "Spend by team (dotted: without clawback)" in _charts(at)


def test_holdout_section_without_cohorts_says_so(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path, cohorts=False)
    at = _open(AppTest.from_file(APP, default_timeout=30).run(), "Holdout")
    assert "Holdout against treated traffic" not in [h.value for h in at.subheader]
    assert not _charts(at)
    assert any("cohort" in i.value for i in at.info)


def test_component_tables_appear_once_they_hold_rows(env: str, tmp_path: Path) -> None:
    seed(env, tmp_path)
    from sqlalchemy import text

    from clawback.storage import make_engine

    at = _open(AppTest.from_file(APP, default_timeout=30).run(), "Budgets and rollout")
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
    at = _open(AppTest.from_file(APP, default_timeout=30).run(), "Budgets and rollout")
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
    assert not _charts(at) and not at.metric
    at.text_input[0].input("wrong")
    at.button[0].click().run()
    assert not _charts(at)
    assert at.error and "Wrong password" in at.error[0].value
    at.text_input[0].input("s3cret")
    at.button[0].click().run()
    assert not at.exception
    assert set(_charts(at)) == SECTION_CHARTS["Overview"]


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
