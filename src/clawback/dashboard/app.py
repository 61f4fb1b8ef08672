"""The Streamlit script behind ``clawback dashboard`` (run by ``streamlit run``, not imported by the CLI).

It reads its configuration the way every command does (``load_settings``: the file named by
``CLAWBACK_DASHBOARD_CONFIG_PATH``, then ``CLAWBACK_*`` variables, ``CLAWBACK_LEDGER__URL`` included) and shows
what the ledger's rollups say, through ``clawback.dashboard.data`` only. The first screen is the KPIs and the
overview (spend over time split by model / key / team / feature / cohort, savings by optimization); a section
selector (``SECTIONS``) opens the others one at a time: tokens by kind, cache hit rates, the holdout comparison
once rows carry a cohort, latency percentiles and error rates, the largest users / conversations / agents, and
the budget and rollout tables once the components that own them have created them.

Why sections and Vega-Lite (``clawback.dashboard.charts``): at 1 M ledger rows the server script needed ~0.5 s
of CPU for every view at once, but the browser took 13-23 s to draw the ten Plotly charts of one page
(``benchmarks/dashboard_bench.py``, ``benchmarks/README.md``). Only the chosen section's queries and charts run,
and the charts arrive drawn (SVG from the server, ``charts.to_svg``): the browser loads no Vega chunk for them.

A password (``dashboard.password``) gates everything when it is set; ``clawback dashboard`` refuses to
listen beyond localhost without one.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import Engine

from clawback.config import Settings, load_settings
from clawback.dashboard import charts
from clawback.dashboard.data import DIMENSIONS, ENTITY_KINDS, FILTER_COLUMNS, Filters, LedgerQueries, TimeRange, usd
from clawback.dashboard.server import CONFIG_ENV
from clawback.storage.engine import make_engine

__all__ = ["main"]

RANGES: dict[str, timedelta | None] = {
    "Last hour": timedelta(hours=1),
    "Last 24 hours": timedelta(days=1),
    "Last 3 days": timedelta(days=3),
    "Last 7 days": timedelta(days=7),
    "Last 30 days": timedelta(days=30),
    "Last 90 days": timedelta(days=90),
    "All": None,
}
REFRESH: dict[str, int] = {"off": 0, "10 s": 10, "30 s": 30, "1 min": 60, "5 min": 300}


def _settings() -> Settings:
    """Read on every run (a fraction of a millisecond): a cached copy would outlive a changed environment."""
    return load_settings(os.environ.get(CONFIG_ENV) or None)


@st.cache_resource
def _engine(url: str) -> Engine:
    return make_engine(url)


def _logged_in(settings: Settings) -> bool:
    """True when no password is configured or this session entered it."""
    secret = settings.dashboard.password
    if secret is None or st.session_state.get("clawback_authenticated"):
        return True
    st.title("clawback")
    with st.form("login"):
        password = st.text_input("Password", type="password")
        if st.form_submit_button("Log in"):
            if hmac.compare_digest(password.encode(), secret.get_secret_value().encode()):
                st.session_state["clawback_authenticated"] = True
                st.rerun()
            st.error("Wrong password.")
    return False


def _time_range(queries: LedgerQueries) -> TimeRange | None:
    choice = st.sidebar.selectbox("Time range", list(RANGES), index=list(RANGES).index("Last 24 hours"))
    span = RANGES[choice]
    now = datetime.now(UTC)
    if span is not None:
        return TimeRange.last(span, now)
    data = queries.data_span()
    return None if data is None else TimeRange(data[0], max(data[1], now))


def _filters(queries: LedgerQueries, tr: TimeRange) -> Filters:
    options = queries.options(tr)
    picked: dict[str, tuple[str, ...]] = {}
    for attr, column in FILTER_COLUMNS.items():
        if options[column]:
            picked[attr] = tuple(st.sidebar.multiselect(attr.capitalize(), options[column]))
    return Filters(**picked)


def _csv(frame: pd.DataFrame, name: str) -> None:
    st.download_button(f"CSV: {name}", frame.to_csv(index=False).encode(), file_name=f"clawback-{name}.csv",
                       mime="text/csv", key=f"csv-{name}")  # fmt: skip


def _chart(chart: charts.Chart | None, frame: pd.DataFrame, name: str, svg: str | None) -> None:
    """One Vega-Lite chart and its frame as CSV, in a container keyed ``chart-<name>`` (the page gives it the
    CSS class ``st-key-chart-<name>``, by which the browser test and the benchmark find each chart).

    ``svg``: the chart drawn on the server (``charts.to_svg``), inserted as HTML (``st.html`` sanitizes SVG
    away; the markdown renderer passes an HTML block through as it is): the browser then loads no Vega chunk.
    A chart too large for that (no ``svg``) is drawn by ``st.vega_lite_chart`` (canvas)."""
    if chart is None:
        st.info(f"No {name.replace('-', ' ')} in this range.")
        return
    with st.container(key=f"chart-{name}"):
        if svg is None:
            st.vega_lite_chart(chart.data, chart.spec, width="stretch")
        else:  # a <div> HTML block on its own lines: markdown leaves what is inside untouched
            st.markdown(f'<div class="clawback-chart">\n{svg}\n</div>', unsafe_allow_html=True)
        _csv(frame, name)


#: Where a chart goes (a column or container), the chart, its frame (the CSV), its name and its width in pixels
#: (the SVG's own: the browser scales it to the column, so about the column's width keeps the text's size).
_Slot = tuple[Any, charts.Chart | None, pd.DataFrame, str, int]


def _draw(slots: list[_Slot]) -> None:
    """A section's charts, drawn on the server concurrently (``charts.to_svgs``), each into its place."""
    svgs = charts.to_svgs([(chart, width) for _, chart, _, _, width in slots])
    for (place, chart, frame, name, _), svg in zip(slots, svgs, strict=True):
        with place:
            _chart(chart, frame, name, svg)


def _kpis(queries: LedgerQueries, tr: TimeRange, flt: Filters) -> None:
    totals = queries.totals(tr, flt)
    cost, would = totals["cost_micro_usd"], totals["counterfactual_micro_usd"]
    share = (would - cost) / would if would else 0.0
    requests = totals["requests"]
    cols = st.columns(5)
    cols[0].metric("Spend", f"${usd(cost):,.4f}")
    cols[1].metric("Without clawback", f"${usd(would):,.4f}")
    cols[2].metric("Saved", f"${usd(would - cost):,.4f}", f"{share:.1%}")
    cols[3].metric("Requests", f"{requests:,}")
    cols[4].metric("Error rate", f"{totals['errors'] / requests:.2%}" if requests else "-")


class _View:
    """What one section needs: the ledger's queries, the range (and its grain), filters and the spend split."""

    def __init__(self, queries: LedgerQueries, tr: TimeRange, flt: Filters, by: str) -> None:
        self.q, self.tr, self.flt, self.by = queries, tr, flt, by
        self.grain = tr.period


def _overview(v: _View) -> None:
    spend = v.q.spend_series(v.tr, v.flt, v.by)
    savings = v.q.savings_by_stage(v.tr, v.flt)
    left, right = st.columns([3, 2])
    _draw([(left, charts.spend_chart(spend, DIMENSIONS[v.by], v.grain), spend, "spend", 520),
           (right, charts.savings_chart(savings), savings, "savings", 320)])  # fmt: skip


def _tokens(v: _View) -> None:
    tokens = v.q.token_series(v.tr, v.flt)
    _draw([(st.container(), charts.tokens_chart(tokens, v.grain), tokens, "tokens", 900)])


def _caches(v: _View) -> None:
    caches = v.q.cache_series(v.tr, v.flt)
    _draw([(st.container(), charts.cache_chart(caches, v.grain), caches, "cache-hit-rates", 900)])
    st.dataframe(v.q.cache_summary(v.tr, v.flt), hide_index=True, width="stretch")


def _holdout(v: _View) -> None:
    cohorts = v.q.cohorts(v.tr, v.flt)
    if cohorts.empty:
        st.info("No request in this range carries a cohort label (the flags stage's holdout group writes one).")
        return
    st.subheader("Holdout against treated traffic")
    left, right = st.columns(2)
    _draw([(left, charts.cohort_chart(cohorts), cohorts, "holdout", 440)])
    with right:
        st.dataframe(cohorts, hide_index=True, width="stretch")


def _latency_errors(v: _View) -> None:
    latency = v.q.latency_series(v.tr, v.flt)
    errors = v.q.error_series(v.tr, v.flt)
    left, right = st.columns(2)
    _draw([(left, charts.latency_chart(latency, v.grain), latency, "latency", 440),
           (right, charts.errors_chart(errors, v.grain), errors, "errors", 440)])  # fmt: skip
    with left:
        st.dataframe(v.q.latency(v.tr, v.flt), hide_index=True, width="stretch")


def _spenders(v: _View) -> None:
    st.subheader("Largest spenders")
    grain = "day" if LedgerQueries.entity_period(v.tr) == "day" else "whole week (Monday, UTC)"
    st.caption(f"Users, conversations and agents are rolled up per {grain} and key: of the filters, only keys "
               "apply here.")  # fmt: skip
    slots: list[_Slot] = []
    for column, (kind, label) in zip(st.columns(len(ENTITY_KINDS)), ENTITY_KINDS.items(), strict=True):
        top = v.q.top_entities(v.tr, kind, v.flt, limit=10)
        if top.empty:
            column.info(f"No {label} ids recorded in this range.")
        else:
            slots.append((column, charts.entity_chart(top, label), top, f"top-{kind}", 240))
    _draw(slots)


def _budgets_rollout(v: _View) -> None:
    _components(v.q, _settings())


#: The dashboard's sections, in the selector's order: what each draws and the charts it may hold (the keys
#: ``chart-<name>``; the browser test and ``benchmarks/dashboard_bench.py`` wait for them). Only the chosen
#: section's queries and charts run: measured at 1 M ledger rows, every chart on one page took the browser
#: 13-23 s to draw (``benchmarks/README.md``), so the first screen is the KPIs and two charts.
SECTIONS: dict[str, tuple[Callable[[_View], None], tuple[str, ...]]] = {
    "Overview": (_overview, ("spend", "savings")),
    "Tokens": (_tokens, ("tokens",)),
    "Caches": (_caches, ("cache-hit-rates",)),
    "Holdout": (_holdout, ("holdout",)),
    "Latency and errors": (_latency_errors, ("latency", "errors")),
    "Largest spenders": (_spenders, ("top-user", "top-session", "top-agent")),
    "Budgets and rollout": (_budgets_rollout, ()),
}
DEFAULT_SECTION = "Overview"


def _section() -> str:
    """The section selector: one section runs at a time (``st.tabs`` would run and send every tab's content).
    Bound to the URL's ``?view=`` so that a section can be linked to and survives a reload."""
    choice = st.segmented_control("View", list(SECTIONS), default=DEFAULT_SECTION, required=True, key="view",
                                  bind="query-params", label_visibility="collapsed")  # fmt: skip
    return choice if choice in SECTIONS else DEFAULT_SECTION


def _body(queries: LedgerQueries, tr: TimeRange, flt: Filters, by: str, section: str) -> None:
    grain = "hourly" if tr.period == "hour" else "daily, whole UTC days"
    # The clock's colons escaped ("01\\:16\\:31" shows as 01:16:31): ":16:" reads to Streamlit's markdown as an
    # emoji shortcode, and the browser would fetch and run its emoji plugin and table (0.27 MB) for it.
    shown = (f"{tr.start:%Y-%m-%d %H:%M} to {tr.end:%Y-%m-%d %H:%M} UTC ({grain}); refreshed "
             f"{datetime.now(UTC):%H:%M:%S} UTC")  # fmt: skip
    st.caption(shown.replace(":", "\\:"))
    _kpis(queries, tr, flt)
    draw, _ = SECTIONS[section]
    draw(_View(queries, tr, flt, by))


def _budget_use(settings: Settings) -> pd.DataFrame | None:
    """Each budget window's spend against its limit, from the gateway's ``POST /admin/budgets:reconcile`` (the
    counters live in the gateway or in Redis); None without a gateway admin token or a reachable gateway."""
    token = settings.gateway.admin_token
    if token is None:
        return None
    import httpx

    try:
        response = httpx.post(f"http://{settings.gateway.host}:{settings.gateway.port}/admin/budgets:reconcile",
                              headers={"authorization": f"Bearer {token.get_secret_value()}"}, timeout=2.0)  # fmt: skip
        rows = response.json().get("reconciliation", []) if response.status_code == 200 else []
    except (httpx.HTTPError, ValueError):
        return None
    frame = pd.DataFrame(rows)
    if frame.empty or "limit_usd" not in frame:
        return frame
    limits = pd.to_numeric(frame["limit_usd"], errors="coerce")
    frame["used"] = pd.to_numeric(frame["spent_usd"], errors="coerce") / limits
    frame["threshold"] = pd.cut(frame["used"], [-1, 0.5, 0.8, 1.0, float("inf")],
                                labels=["< 50 %", "50-80 %", "80-100 %", "over"])  # fmt: skip
    return frame[["budget", "scope_value", "window", "spent_usd", "reserved_usd", "limit_usd", "used", "threshold",
                  "drift_usd", "resets_at"]]  # fmt: skip


def _components(queries: LedgerQueries, settings: Settings) -> None:
    """Budgets and rollout state, from the tables their components create (shown only once they exist)."""
    use = _budget_use(settings)
    shown = False
    if use is not None and not use.empty:
        shown = True
        st.subheader("Budget utilisation")
        over = use[use["used"] >= 0.8] if "used" in use else use.iloc[0:0]
        if len(over):
            st.warning(f"{len(over)} budget window(s) at 80 % or more of their limit.")
        bar = st.column_config.ProgressColumn("used", min_value=0.0, max_value=1.0, format="percent")
        st.dataframe(use, hide_index=True, width="stretch", column_config={"used": bar})
    for title, prefixes in (("Budgets", ("budget",)), ("Rollout (flags)", ("flag", "rollout"))):
        tables = queries.component_tables(prefixes)
        if not tables:
            continue
        shown = True
        st.subheader(title)
        for name, frame in tables.items():
            st.caption(name)
            st.dataframe(frame, hide_index=True, width="stretch")
    if not shown:
        st.info("No budget or rollout state yet: budgets and flags appear here once defined (`clawback budgets`, "
                "`clawback flags`); budget utilisation needs gateway.admin_token and a reachable gateway.")  # fmt: skip


def _health(settings: Settings) -> None:
    """Component and pool health on demand (``clawback health``'s checks): a click, not every render, since a
    part that is down takes its timeout to answer."""
    with st.expander("Component health"):
        if not st.button("Check now", key="health-check"):
            st.caption("Upstream, ledger database, Redis, the gateway's ledger queue and journal, cache hit rates.")
            return
        from clawback.reports.health import check_health

        gateway = f"http://{settings.gateway.host}:{settings.gateway.port}"
        report = check_health(settings, gateway_url=gateway, timeout=2.0)
        rows = [{"part": c.part, "status": c.status, "detail": c.detail} for c in report.checks]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        (st.success if report.healthy else st.error)(
            "Every part is up." if report.healthy else "Down: " + ", ".join(c.part for c in report.down)
        )


def main() -> None:
    st.set_page_config(page_title="clawback: cost dashboard", layout="wide")
    charts.warm_up()  # Vega's engine starts while this first run queries the ledger
    settings = _settings()
    if not _logged_in(settings):
        return
    queries = LedgerQueries(_engine(settings.ledger.url))
    st.sidebar.title("clawback")
    st.sidebar.caption(f"ledger: {make_engine_url_label(settings.ledger.url)}")
    if not queries.has_rollups():
        st.warning("This ledger has no rollup tables yet: run the gateway (or `clawback demo`) once to migrate it.")
        return
    tr = _time_range(queries)
    if tr is None:
        st.info("The ledger is empty: send some traffic through the gateway, or run `clawback demo`.")
        return
    flt = _filters(queries, tr)
    by = st.sidebar.selectbox("Split spend by", list(DIMENSIONS), format_func=DIMENSIONS.__getitem__)
    default_refresh = next((k for k, v in REFRESH.items() if v == settings.dashboard.refresh_s), "off")
    refresh = REFRESH[st.sidebar.selectbox("Auto-refresh", list(REFRESH), index=list(REFRESH).index(default_refresh))]
    st.title("Cost dashboard")
    _health(settings)
    section = _section()
    if refresh:
        st.fragment(run_every=refresh)(_refreshing)(queries, tr, flt, by, section)
    else:
        _body(queries, tr, flt, by, section)


def _refreshing(queries: LedgerQueries, tr: TimeRange, flt: Filters, by: str, section: str) -> None:
    """The body again on each tick, the range moved up to now (its length kept)."""
    _body(queries, TimeRange.last(tr.end - tr.start), flt, by, section)


def make_engine_url_label(url: str) -> str:
    """The ledger URL without its password, for the sidebar."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":  # ``streamlit run`` executes this file as ``__main__``; importing it runs nothing
    main()
