"""The dashboard and the HTML report in a real browser: Debian's Chromium driven by Playwright.

One browser session for the module (a few seconds of CI): ``clawback demo`` writes a ledger, the dashboard
starts on it (``streamlit run`` in a child process), Chromium opens it, and each section is opened by a click
on the section selector: every Vega-Lite chart of each section must have drawn marks carrying data (the SVG
marks' labels name their values); then ``clawback report --format html`` on the same ledger is opened from disk
and its Plotly charts must have drawn too. Screenshots go to the test's temporary output directory (printed).

Chromium comes from Debian (``scripts/install.sh`` installs it); Playwright's own browser download is never used.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

from clawback.cli import app as cli_app
from clawback.cli.demo import run_demo
from clawback.config import Settings
from clawback.dashboard.server import DashboardProcess
from clawback.serving import free_port

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
#: What each drawn Plotly chart holds: its title, traces, and data points across its traces.
CHARTS_JS = """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(el => ({
  title: (el.layout && el.layout.title && (el.layout.title.text || el.layout.title)) || '',
  traces: (el.data || []).length,
  points: (el.data || []).reduce((n, t) => n + ((t.x && t.x.length) || (t.y && t.y.length) || 0), 0),
  drawn: el.querySelectorAll('.trace, .bars .point, .scatterlayer path').length,
}))"""

if not os.path.exists(CHROMIUM):
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} missing: scripts/install.sh installs Debian's chromium", pytrace=False)
    pytest.skip(f"{CHROMIUM} missing (bash scripts/install.sh installs it)", allow_module_level=True)

playwright_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("browser")


@pytest.fixture(scope="module")
def demo_ledger(out_dir: Path) -> Path:
    ledger = out_dir / "demo.db"
    run_demo(ledger, scale=0.05, console=Console(file=io.StringIO()))
    return ledger


@pytest.fixture(scope="module")
def page(out_dir: Path) -> Iterator[Any]:
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)  # a fresh profile dir of its own
        context = browser.new_context(viewport={"width": 1400, "height": 3000})  # tall: the whole page in one shot
        yield context.new_page()
        context.close()
        browser.close()


def _charts(page: Any, expected: int, timeout_ms: int = 60_000) -> list[dict[str, Any]]:
    """Wait until ``expected`` Plotly charts have drawn (scrolling, in case a page draws what is in view only)."""
    page.wait_for_function(
        "n => { window.scrollTo(0, document.body.scrollHeight);"
        " document.querySelectorAll('[data-testid=stMain], section.main').forEach(e => e.scrollTo(0, e.scrollHeight));"
        " return Array.from(document.querySelectorAll('.js-plotly-plot')).filter(e => e.data).length >= n; }",
        arg=expected, timeout=timeout_ms, polling=250,
    )  # fmt: skip
    page.evaluate("window.scrollTo(0, 0)")
    charts: list[dict[str, Any]] = page.evaluate(CHARTS_JS)
    for chart in charts:
        chart["title"] = re.sub(r"<[^>]+>", "", str(chart["title"]))
    return charts


#: Each dashboard chart (``app.SECTIONS``: a container with the CSS class ``st-key-chart-<name>``) as drawn:
#: its title, its data marks (Vega's SVG renderer: one path per bar / point / line) and how many of them carry
#: a label naming a number (Vega's ARIA label of a mark: "bucket: ...; cost_usd: 1.23").
VEGA_JS = """keys => keys.map(k => document.querySelector('.st-key-chart-' + k)).filter(e => e).map(e => {
  const marks = Array.from(e.querySelectorAll('svg.marks .role-mark path'));
  return {
    key: Array.from(e.classList).find(c => c.startsWith('st-key-chart-')).slice('st-key-chart-'.length),
    title: (e.querySelector('.role-title-text') || {}).textContent || '',
    marks: marks.length,
    labelled: marks.filter(m => /[0-9]/.test(m.getAttribute('aria-label') || '')).length,
  };
})"""
#: What each section of the dashboard draws on the demo's ledger (its requests carry no user, conversation or
#: agent ids: that section says so instead of drawing).
DEMO_SECTIONS = {
    "Overview": {"spend": "Spend by model", "savings": "Savings by optimization"},
    "Tokens": {"tokens": "Tokens by kind"},
    "Caches": {"cache-hit-rates": "Cache hit rates"},
    "Holdout": {"holdout": "Holdout vs treated: cost per request"},
    "Latency and errors": {"latency": "Latency percentiles", "errors": "Error rate"},
    "Largest spenders": {},
    "Budgets and rollout": {},
}


def _section_charts(page: Any, section: str, timeout_ms: int = 60_000) -> list[dict[str, Any]]:
    """Open ``section`` (a click on the selector, unless it is the first screen) and wait until the charts the
    demo's ledger gives it have drawn marks, or, for a section with none, until its content has arrived."""
    from clawback.dashboard.app import DEFAULT_SECTION, SECTIONS

    if section != DEFAULT_SECTION:
        page.locator(".st-key-view").get_by_text(section, exact=True).click()
    expected = list(DEMO_SECTIONS[section])
    if expected:
        page.wait_for_function(
            "keys => keys.every(k => { const e = document.querySelector('.st-key-chart-' + k);"
            " return e && e.querySelector('svg.marks .role-mark path'); })",
            arg=expected, timeout=timeout_ms, polling=100,
        )  # fmt: skip
    else:  # the section's own message replaced the previous section's charts
        page.wait_for_function(
            "() => !document.querySelector('[class*=st-key-chart-]') &&"
            " document.querySelectorAll('[data-testid=stMainBlockContainer] [data-testid=stAlert],"
            " [data-testid=stMainBlockContainer] [data-testid=stHeading]').length > 0",
            timeout=timeout_ms, polling=100,
        )  # fmt: skip
    page.wait_for_timeout(300)  # a last chart's transition, before the screenshot
    charts: list[dict[str, Any]] = page.evaluate(VEGA_JS, list(SECTIONS[section][1]))
    return charts


def test_dashboard_draws_every_section_with_data(page: Any, demo_ledger: Path, out_dir: Path) -> None:
    from clawback.dashboard.app import SECTIONS

    assert list(DEMO_SECTIONS) == list(SECTIONS)
    settings = Settings(ledger={"url": f"sqlite:///{demo_ledger}"}, dashboard={"port": free_port()})
    drawn: dict[str, list[dict[str, Any]]] = {}
    with DashboardProcess(settings) as dashboard:
        page.goto(dashboard.url)
        for section in SECTIONS:
            drawn[section] = _section_charts(page, section)
            shot = out_dir / f"dashboard-{section.lower().replace(' ', '-')}.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"dashboard screenshot ({section}): {shot}")
            assert page.get_by_test_id("stMetric").count() == 5, section  # the KPIs head every section
    for section, expected in DEMO_SECTIONS.items():
        charts = drawn[section]
        assert {c["key"]: c["title"].split(" (")[0] for c in charts} == expected, (section, charts)
        for chart in charts:
            assert chart["marks"] > 0 and chart["labelled"] > 0, (section, chart)
    assert not page.locator(".js-plotly-plot").count()  # the dashboard draws no Plotly chart
    assert (out_dir / "dashboard-overview.png").stat().st_size > 10_000


def test_html_report_of_the_demo_ledger_opens_with_its_charts(page: Any, demo_ledger: Path, out_dir: Path) -> None:
    report = out_dir / "report.html"
    result = CliRunner().invoke(cli_app, ["report", "--period", "week", "--format", "html", "--ledger",
                                          f"sqlite:///{demo_ledger}", "--out", str(report)])  # fmt: skip
    assert result.exit_code == 0, result.output
    page.goto(report.as_uri())
    charts = _charts(page, 4, timeout_ms=20_000)
    shot = out_dir / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"report screenshot: {shot}")
    titles = [c["title"] for c in charts]
    assert {"Spend by model", "Savings by optimization", "Spend per day", "Cache hit rates"} <= set(titles), titles
    for chart in charts:
        assert chart["traces"] > 0 and chart["points"] > 0 and chart["drawn"] > 0, chart
    assert "would have cost" in page.inner_text("body")
