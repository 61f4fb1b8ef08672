"""The dashboard at 1 M ledger rows, on SQLite and PostgreSQL: each query's time and the browser's first render.

Not a test and not run in CI (``benchmarks/README.md``). Steps, per backend:

1. Seed: ``--rows`` (1,000,000) ledger records over ``--days`` (30) days ending now, through the ledger writer's
   own store path (``LedgerWriter._store``: raw rows and rollups in one transaction, as the gateway writes them),
   in batches of ``--seed-batch``. The traffic is correlated as real traffic is: 40 keys, each owned by one of 8
   teams and serving 1-3 of 12 features, each feature on 1-2 of 4 models; 5,000 users, ~100 k conversations,
   300 agents (a user belongs to one key, a conversation of 1-20 requests to one user, feature and model);
   exact-cache hit / miss / bypass; 1 % errors; lognormal latencies; a 5 % holdout cohort label on
   every row (as the flags stage will write), so the rollups are as large as they will be once flags exist.
2. Queries: every ``LedgerQueries`` call the dashboard makes on its first render (and the report's extra ones),
   over the last 24 hours (the default, hourly grain), 7 days and 30 days (daily grain): ``--repeats`` runs each,
   median and max in ms. Target: each <= 200 ms.
3. First render: ``clawback dashboard`` (Streamlit, a child process) on that ledger, Debian's Chromium driven by
   Playwright opens it ``--renders`` times (a new browser context each time: a new Streamlit session, nothing
   cached), timed from navigation until the first screen's charts have drawn (``app.SECTIONS``' default
   section; the other sections run only when chosen). Target <= 2 s.

It also reports the writer's CPU per record with and without rollups on realistic 32-record batches (the
gateway's batch size), and the rollup tables' row counts. Prints one JSON object as its last line.

    .venv/bin/python benchmarks/dashboard_bench.py                       # SQLite and PostgreSQL, ~15 min
    .venv/bin/python benchmarks/dashboard_bench.py --backends sqlite --rows 200000
    .venv/bin/python benchmarks/dashboard_bench.py --render-only --ledger URL   # an already seeded ledger: the
        # page before sections, this one and Streamlit's floor, side by side, and each section after a click

Seeding 1 M rows costs minutes (~200 s SQLite, ~375 s PostgreSQL here): ``--reuse PATH|URL`` (once per backend)
keeps the seeded ledger and, on later runs, only migrates it to the newest revision (timed: the backfill of any
rollup table added since) before the queries; ``--seed-only`` stops after seeding, ``--queries-only`` skips
the writer cost and the browser render (``--skip-writer-cost``, ``--skip-render`` one each):

    .venv/bin/python benchmarks/dashboard_bench.py --backends sqlite --reuse /tmp/dash1m.db --seed-only
    .venv/bin/python benchmarks/dashboard_bench.py --backends sqlite --reuse /tmp/dash1m.db --queries-only \\
        --out benchmarks/dashboard-queries.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, inspect, select, text

from clawback.config import Settings
from clawback.dashboard.data import Filters, LedgerQueries, TimeRange
from clawback.dashboard.server import DashboardProcess
from clawback.serving import free_port
from clawback.storage import LedgerRecord, LedgerWriter, make_engine
from clawback.storage import ledger as ledger_module
from clawback.storage import rollups as rollups_module
from clawback.storage.rollup_models import entity_table, savings_table, usage_table

PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "claude-sonnet-4-6"]
FEATURES = [f"feature-{i}" for i in range(12)]


def traffic(rows: int, days: int, seed: int = 0) -> Iterator[LedgerRecord]:
    """Correlated synthetic traffic ending now (see the module docstring), in conversations of 1-20 requests:
    a user belongs to one key (an application's end user), a conversation to one user, feature and model."""
    rng = random.Random(seed)
    keys = []
    for k in range(40):
        features = rng.sample(FEATURES, rng.randint(1, 3))
        keys.append((f"key_{k:03d}", f"team-{k % 8}", features))
    feature_models = {f: rng.sample(MODELS, rng.randint(1, 2)) for f in FEATURES}
    user_key = [keys[min(int(rng.paretovariate(1.2)) - 1, 39)] for _ in range(5000)]
    end = datetime.now(UTC).replace(microsecond=0)
    start = end - timedelta(days=days)
    step = (end - start).total_seconds() / rows
    i = conversation = 0
    while i < rows:
        user = rng.randrange(5000)
        key_id, team, features = user_key[user]
        feature = rng.choice(features)
        model = rng.choice(feature_models[feature])
        agent = f"agent-{rng.randint(0, 299)}" if rng.random() < 0.2 else None
        conversation += 1
        for _ in range(min(rng.randint(1, 20), rows - i)):
            started = start + timedelta(seconds=i * step)
            latency = rng.lognormvariate(6.5, 0.8)
            status, error = (529, "overloaded_error") if rng.random() < 0.01 else (200, None)
            cache = rng.choices(["miss", "hit", "bypass"], weights=[70, 10, 20])[0]
            inp, out = rng.randint(200, 8000), rng.randint(20, 800)
            read = rng.randint(0, inp) if rng.random() < 0.6 else 0
            cost = 0 if cache == "hit" else inp * 3 + out * 15 + read // 3
            holdout = rng.random() < 0.05
            saved = (
                {} if holdout else {"prompt_cache": read * 2, **({"pruning": inp // 4} if rng.random() < 0.3 else {})}
            )
            if cache == "hit":
                saved = {"exact_cache": inp * 3 + out * 15}
            yield LedgerRecord(
                request_id=f"bench-{i}", started_at=started, finished_at=started + timedelta(milliseconds=latency),
                model=model, endpoint="messages", status=status, error_type=error, latency_ms=latency,
                ttft_ms=latency / 3, stream=rng.random() < 0.5, key_id=key_id, team=team, feature=feature,
                user=f"user-{user}", session_id=f"conv-{conversation}", agent_id=agent,
                labels={"cohort": "holdout" if holdout else "treated"}, input_tokens=inp, output_tokens=out,
                cache_read_input_tokens=read, cost_micro_usd=cost, counterfactual_micro_usd=cost + sum(saved.values()),
                savings_micro_usd=saved, cache_status=cache,
            )  # fmt: skip
            i += 1


def seed(url: str, rows: int, days: int, batch: int, journal: Path) -> dict[str, Any]:
    writer = LedgerWriter(url, journal_path=journal, batch_size=batch)
    writer._ensure_schema()
    started, cpu = time.perf_counter(), time.process_time()
    chunk: list[LedgerRecord] = []
    for record in traffic(rows, days):
        chunk.append(record)
        if len(chunk) == batch:
            writer._store(chunk)
            chunk = []
    if chunk:
        writer._store(chunk)
    wall = time.perf_counter() - started
    writer.close()
    engine = make_engine(url)
    with engine.connect() as conn:
        counts = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                  for t in (usage_table, savings_table, entity_table)}  # fmt: skip
        counts["ledger"] = conn.execute(text("SELECT count(*) FROM ledger")).scalar_one()
        by_period = dict(conn.execute(select(usage_table.c.period, func.count()).group_by(usage_table.c.period)).all())
    engine.dispose()
    return {"seed_s": round(wall, 1), "seed_cpu_s": round(time.process_time() - cpu, 1), "rows": counts,
            "usage_rows_by_period": by_period}  # fmt: skip


def seed_by_backfill(url: str, rows: int, days: int) -> dict[str, Any]:
    """Seed PostgreSQL faster: raw rows by COPY into a ledger at revision 0005, then migration
    ``0006_ledger_rollups`` rolls them up (its backfill, tested equal to what the writer keeps:
    ``tests/integration/test_dashboard_postgres.py``). The writer's own cost is measured apart (writer_cost)."""
    from psycopg.types.json import Jsonb

    from clawback.storage.ledger import _FIELD_NAMES
    from clawback.storage.migrate import migrate_engine

    engine = make_engine(url)
    migrate_engine(engine, "0005_flags")
    started = time.perf_counter()
    raw = engine.raw_connection()
    try:
        columns = ", ".join(f'"{name}"' for name in _FIELD_NAMES)  # "user" is a reserved word
        with raw.cursor() as cursor, cursor.copy(f"COPY ledger ({columns}) FROM STDIN") as copy:
            for record in traffic(rows, days):
                values = record.to_row()  # the JSON columns (labels, savings, shadow savings) as jsonb
                copy.write_row([Jsonb(v) if isinstance(v, dict) else v for v in (values[n] for n in _FIELD_NAMES)])
        raw.commit()
    finally:
        raw.close()
    copied = time.perf_counter() - started
    migrate_engine(engine)
    backfill = time.perf_counter() - started - copied
    with engine.connect() as conn:
        counts = {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
                  for t in (usage_table, savings_table, entity_table)}  # fmt: skip
        counts["ledger"] = conn.execute(text("SELECT count(*) FROM ledger")).scalar_one()
    engine.dispose()
    return {"mode": "copy + migration backfill", "copy_s": round(copied, 1), "backfill_s": round(backfill, 1),
            "rows": counts}  # fmt: skip


def ledger_rows(url: str) -> int:
    """Rows in the ledger at ``url`` (0 when it has no ledger table yet): whether a reused ledger needs seeding."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            if "ledger" not in inspect(conn).get_table_names():
                return 0
            return int(conn.execute(text("SELECT count(*) FROM ledger")).scalar_one())
    finally:
        engine.dispose()


def reuse(url: str) -> dict[str, Any]:
    """An already-seeded ledger: migrate it to the newest revision (the backfill of any rollup table added since
    it was seeded: timed) and count its tables."""
    from clawback.storage.migrate import current_revision, migrate_engine

    engine = make_engine(url)
    try:
        before = current_revision(engine)
        started, cpu = time.perf_counter(), time.process_time()
        migrate_engine(engine)
        out: dict[str, Any] = {"revision_before": before, "revision": current_revision(engine),
                               "migrate_s": round(time.perf_counter() - started, 1),
                               "migrate_cpu_s": round(time.process_time() - cpu, 1)}  # fmt: skip
        with engine.connect() as conn:
            out["rows"] = {name: conn.execute(text(f'SELECT count(*) FROM "{name}"')).scalar_one()
                           for name in sorted(inspect(conn).get_table_names())
                           if name == "ledger" or name.startswith("ledger_rollup")}  # fmt: skip
        return out
    finally:
        engine.dispose()


def writer_cost(url_for: Callable[[str], str], records: int = 20_000) -> dict[str, float]:
    """Writer CPU per record, 32-record batches of the same traffic: without the rollups, with all of them,
    and with all but the entity totals (``rollups._write_entity_totals``: migration 0007's tables), interleaved."""
    out: dict[str, float] = {}
    data = list(traffic(records, 1, seed=1))
    runs = [("plain", "none"), ("rollups", "all"), ("rollups_without_entity_totals", "no_totals")]
    for label, roll in runs + [(label + "_again", roll) for label, roll in runs]:
        url = url_for(label)
        writer = LedgerWriter(url, journal_path=Path(tempfile.mkdtemp()) / "j")
        writer._ensure_schema()
        original, original_totals = ledger_module.write_rollups, rollups_module._write_entity_totals
        if roll == "none":
            ledger_module.write_rollups = lambda conn, recs: 0  # type: ignore[assignment]
        if roll == "no_totals":
            rollups_module._write_entity_totals = lambda conn, recs: 0  # type: ignore[assignment]
        try:
            cpu = time.process_time()
            for i in range(0, records, 32):
                writer._store(data[i : i + 32])
            out[label] = round((time.process_time() - cpu) / records * 1e6, 1)
        finally:
            ledger_module.write_rollups, rollups_module._write_entity_totals = original, original_totals
            writer.close()
    return out


def dashboard_queries(q: LedgerQueries, tr: TimeRange) -> dict[str, Callable[[], Any]]:
    """The calls one first render of the dashboard makes (app.py ``_body``), plus the report's."""
    flt = Filters()
    return {
        "data_span": q.data_span,
        "options": lambda: q.options(tr),
        "totals": lambda: q.totals(tr, flt),
        "spend_series": lambda: q.spend_series(tr, flt, "model"),
        "token_series": lambda: q.token_series(tr, flt),
        "cache_series": lambda: q.cache_series(tr, flt),
        "cache_summary": lambda: q.cache_summary(tr, flt),
        "savings_by_stage": lambda: q.savings_by_stage(tr, flt),
        "cohorts": lambda: q.cohorts(tr, flt),
        "latency_series": lambda: q.latency_series(tr, flt),
        "latency": lambda: q.latency(tr, flt),
        "error_series": lambda: q.error_series(tr, flt),
        "top_user": lambda: q.top_entities(tr, "user", flt),
        "top_session": lambda: q.top_entities(tr, "session", flt),
        "top_agent": lambda: q.top_entities(tr, "agent", flt),
        "component_tables": lambda: q.component_tables(("budget", "flag", "rollout")),
        "breakdown_key": lambda: q.breakdown(tr, by="key_id"),
        "daily_spend": lambda: q.daily_spend(tr),
        "filtered_totals": lambda: q.totals(tr, Filters(models=("claude-haiku-4-5",), teams=("team-1",))),
        # With a key filter the largest spenders are grouped (the entity totals are across keys); key_000 is
        # the busiest key (~1/3 of the users): the worst case of that path.
        "top_session_one_key": lambda: q.top_entities(tr, "session", Filters(keys=("key_000",))),
    }


def time_queries(url: str, repeats: int) -> dict[str, dict[str, dict[str, float]]]:
    engine = make_engine(url)
    q = LedgerQueries(engine)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for label, span in (("24h", timedelta(days=1)), ("7d", timedelta(days=7)), ("30d", timedelta(days=30))):
        tr = TimeRange.last(span)
        out[label] = {}
        for name, call in dashboard_queries(q, tr).items():
            times, cpu = [], []
            for _ in range(repeats):
                started, cpu_started = time.perf_counter(), time.process_time()
                call()
                times.append((time.perf_counter() - started) * 1000)
                cpu.append((time.process_time() - cpu_started) * 1000)
            out[label][name] = {"median_ms": round(statistics.median(times), 1), "max_ms": round(max(times), 1),
                                "median_cpu_ms": round(statistics.median(cpu), 1)}  # fmt: skip
        out[label]["_loadavg"] = {"median_ms": round(os.getloadavg()[0], 2), "max_ms": 0.0, "median_cpu_ms": 0.0}
    engine.dispose()
    return out


def verify_top_entities(url: str) -> dict[str, Any]:
    """The largest spenders through the entity totals against the plain GROUP BY (the totals disabled) on the
    seeded ledger: 8 spans x 2 ends x 3 kinds x 3 key filters, every frame equal or an AssertionError."""
    import pandas as pd

    engine = make_engine(url)
    q, plain = LedgerQueries(engine), LedgerQueries(engine)
    plain._has_entity_totals = lambda: False  # type: ignore[method-assign]
    now, checked = datetime.now(UTC), 0
    try:
        for days in (0.25, 1, 3, 7, 14, 15, 30, 45):
            for back in (0, 5):
                tr = TimeRange.last(timedelta(days=days), now=now - timedelta(days=back))
                for kind in ("user", "session", "agent"):
                    for keys in ((), ("key_000",), ("key_001", "key_002")):
                        flt = Filters(keys=keys)
                        pd.testing.assert_frame_equal(q.top_entities(tr, kind, flt), plain.top_entities(tr, kind, flt))
                        checked += 1
    finally:
        engine.dispose()
    return {"equal": checked}


def first_render(url: str, renders: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    settings = Settings(ledger={"url": url}, dashboard={"port": free_port()})
    times: list[float] = []
    busy: list[float] = []
    scripts: list[float] = []
    charts = 0
    with DashboardProcess(settings) as dashboard, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for i in range(renders + 1):  # the first one warms the server process's imports; reported apart
            context = browser.new_context(viewport={"width": 1400, "height": 3000})
            page = context.new_page()
            cdp = context.new_cdp_session(page)
            cdp.send("Performance.enable")
            started = time.perf_counter()
            page.goto(dashboard.url)
            page.wait_for_function(DRAWN_JS, arg=list(FIRST_SCREEN), timeout=120_000, polling=20)
            elapsed = time.perf_counter() - started
            charts = page.evaluate("document.querySelectorAll('[data-testid=stVegaLiteChart]').length")
            metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
            if i:
                times.append(elapsed)
                # The renderer's main-thread busy time (script, layout, paint): what the page cost the browser,
                # whatever else the machine was doing (wall time on a shared 2-core machine is mostly waiting).
                busy.append(metrics.get("TaskDuration", float("nan")))
                scripts.append(metrics.get("ScriptDuration", float("nan")))
            else:
                cold = elapsed
            context.close()
        browser.close()
    return {"cold_s": round(cold, 2), "renders_s": [round(t, 2) for t in times],
            "median_s": round(statistics.median(times), 2), "charts": charts,
            "browser_main_thread_busy_s": round(statistics.median(busy), 2),
            "browser_script_s": round(statistics.median(scripts), 2), "server_script": script_cost(url),
            "loadavg_1m_after": round(os.getloadavg()[0], 2)}  # fmt: skip


#: True when every chart named (``app.SECTIONS``' keys ``chart-<name>``) has drawn marks (SVG) or its canvas.
DRAWN_JS = """keys => keys.every(k => { const e = document.querySelector('.st-key-chart-' + k);
  return e && e.querySelector('svg.marks .role-mark path, canvas'); })"""
#: The page before sections (commit 47751b9): every Plotly chart on one page, 10 on this bench's ledger.
OLD_DRAWN_JS = """n => { const p = Array.from(document.querySelectorAll('.js-plotly-plot'));
  return p.length >= n && p.every(e => e.data && e.querySelector('.main-svg')); }"""
FIRST_SCREEN = ("spend", "savings")  # app.SECTIONS[app.DEFAULT_SECTION]: asserted in render_only


def _timed_page(browser: Any, url: str, wait: Callable[[Any], None]) -> tuple[Any, dict[str, float]]:
    """A new browser context (a new Streamlit session, nothing cached) opened on ``url``: seconds from
    navigation until ``wait`` returns, and the renderer main thread's busy and script seconds."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    cdp = context.new_cdp_session(page)
    cdp.send("Performance.enable")
    started = time.perf_counter()
    page.goto(url)
    wait(page)
    wall = time.perf_counter() - started
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return page, {"wall_s": wall, "busy_s": metrics["TaskDuration"], "script_s": metrics["ScriptDuration"]}


#: The floor Streamlit itself sets here: a page of a title and five ``st.metric`` (no query, no chart).
FLOOR_APP = """import streamlit as st
st.set_page_config(page_title="floor", layout="wide")
st.title("Cost dashboard")
for column, value in zip(st.columns(5), range(5)):
    column.metric(f"metric {value}", f"{value * 1000:,}")
"""
FLOOR_JS = "() => document.querySelectorAll('[data-testid=stMetric]').length >= 5"


def render_only(url: str, renders: int, old_ref: str, before_ref: str | None = None) -> dict[str, Any]:
    """First render on an already seeded ledger (``--render-only --ledger URL``): the page before sections
    (``old_ref``'s ``app.py``, all 10 Plotly charts; skipped when ``old_ref`` is empty), this one (until the first
    screen's charts have drawn) and Streamlit's floor (``FLOOR_APP``) side by side, interleaved, ``renders``
    times each after one warm-up apiece. With ``before_ref`` (``--before-ref``) also that commit's whole
    ``src`` tree (its own charts and data layer, first on its process's ``PYTHONPATH``), timed to the same
    first screen as this page: a change's before and after in one run. Each render opens a new browser context
    (a new Streamlit session, the browser's cache empty: ``cold``), then navigates again in it (a new session,
    scripts cached: ``warm``, a returning user). For this page also: a click on each other section, timed until
    its charts have drawn."""
    import subprocess

    from playwright.sync_api import sync_playwright

    from clawback.dashboard import app as app_module

    assert app_module.SECTIONS[app_module.DEFAULT_SECTION][1] == FIRST_SCREEN
    scratch = Path(tempfile.mkdtemp(prefix="clawback-render-"))
    old_app, floor_app = scratch / "old_app.py", scratch / "floor.py"
    if old_ref:
        old_app.write_bytes(subprocess.run(["git", "show", f"{old_ref}:src/clawback/dashboard/app.py"], check=True,
                                           capture_output=True, cwd=Path(__file__).parent).stdout)  # fmt: skip
    floor_app.write_text(FLOOR_APP)
    before_src = scratch / "before"
    if before_ref:
        archive = subprocess.run(["git", "archive", before_ref, "src"], check=True, capture_output=True,
                                 cwd=Path(__file__).resolve().parent.parent).stdout  # fmt: skip
        before_src.mkdir()
        subprocess.run(["tar", "-x", "-C", str(before_src)], input=archive, check=True)
    waits: dict[str, tuple[str, Any]] = {
        **({"old": (OLD_DRAWN_JS, 10)} if old_ref else {}),
        **({"before": (DRAWN_JS, list(FIRST_SCREEN))} if before_ref else {}),
        "new": (DRAWN_JS, list(FIRST_SCREEN)),
        "floor": (FLOOR_JS, None),
    }
    runs: dict[str, list[dict[str, float]]] = {f"{k}_{w}": [] for k in waits for w in ("cold", "warm")}
    sections: dict[str, tuple[str, ...]] = {
        name: keys for name, (_, keys) in app_module.SECTIONS.items() if keys and name != app_module.DEFAULT_SECTION
    }
    clicks: dict[str, dict[str, list[float]]] = {page: {name: [] for name in sections} for page in ("new", "before")}
    load_before = os.getloadavg()

    def dashboard(app: Path | None, src: Path | None = None) -> DashboardProcess:
        """``src``: a source tree first on the process's ``PYTHONPATH`` (read when the process starts)."""
        settings = Settings(ledger={"url": url}, dashboard={"port": free_port()})
        process = DashboardProcess(settings, app=app) if app else DashboardProcess(settings)
        saved = os.environ.get("PYTHONPATH")
        if src is not None:
            os.environ["PYTHONPATH"] = os.pathsep.join([str(src), *([saved] if saved else [])])
        try:
            return stack.enter_context(process)
        finally:
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved

    with contextlib.ExitStack() as stack:
        processes = {"new": dashboard(None), "floor": dashboard(floor_app)}
        if old_ref:
            processes["old"] = dashboard(old_app)
        if before_ref:
            processes["before"] = dashboard(before_src / "src/clawback/dashboard/app.py", before_src / "src")
        pw = stack.enter_context(sync_playwright())
        urls = {name: process.url for name, process in processes.items()}
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        for i in range(renders + 1):  # the first of each warms its server process's imports: not counted
            for name, (js, arg) in waits.items():

                def wait(p: Any, js: str = js, arg: Any = arg) -> None:
                    p.wait_for_function(js, arg=arg, timeout=180_000, polling=20)

                time.sleep(1.0)  # the previous page's renderer winds down first: its teardown is not this page's
                page, cold = _timed_page(browser, urls[name], wait)
                if i and name in clicks:  # this page and the before_ref's: the same sections
                    for section, keys in sections.items():
                        started = time.perf_counter()
                        page.locator(".st-key-view").get_by_text(section, exact=True).click()
                        page.wait_for_function(DRAWN_JS, arg=list(keys), timeout=180_000, polling=20)
                        clicks[name][section].append(round(time.perf_counter() - started, 2))
                started = time.perf_counter()
                page.goto(urls[name])
                wait(page)
                warm = time.perf_counter() - started
                page.context.close()
                if i:
                    runs[f"{name}_cold"].append(cold)
                    runs[f"{name}_warm"].append({"wall_s": warm})
        browser.close()

    def summary(rs: list[dict[str, float]]) -> dict[str, Any]:
        return {"runs_s": [round(r["wall_s"], 2) for r in rs], **{
            f"median_{k}": round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}}  # fmt: skip

    return {"ledger": url, "old_ref": old_ref, "before_ref": before_ref, "renders": renders,
            **{k: summary(v) for k, v in runs.items()},
            **{f"{page}_section_click_s": {k: {"runs": v, "median": statistics.median(v)} for k, v in by.items()}
               for page, by in clicks.items() if page in waits},
            "loadavg_before": load_before, "loadavg_after": os.getloadavg()}  # fmt: skip


def script_cost(url: str, runs: int = 3) -> dict[str, float]:
    """The dashboard script's own cost on the server for one first render (Streamlit's AppTest, in process):
    wall and CPU seconds, median of ``runs``."""
    from streamlit.testing.v1 import AppTest

    import clawback.dashboard.app as app_module

    os.environ["CLAWBACK_LEDGER__URL"] = url
    walls, cpus = [], []
    for _ in range(runs):
        at = AppTest.from_file(app_module.__file__, default_timeout=300)
        wall, cpu = time.perf_counter(), time.process_time()
        at.run()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
        assert not at.exception, at.exception
    return {"wall_s": round(statistics.median(walls), 2), "cpu_s": round(statistics.median(cpus), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed-batch", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--renders", type=int, default=3)
    parser.add_argument(
        "--pg-seed",
        choices=["writer", "backfill"],
        default="backfill",
        help="PostgreSQL: seed through the writer (~40 min for 1 M rows here) or COPY + backfill",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/dashboard.json"), help="results, written as each "
                        "backend finishes")  # fmt: skip
    parser.add_argument(
        "--reuse",
        action="append",
        default=[],
        metavar="PATH|URL",
        help="a ledger to keep and reuse (a SQLite file path or a postgresql URL; repeat for both backends): seeded "
        "there when it holds no ledger rows, otherwise only migrated to the newest revision (timed: the backfill "
        "of any new rollup table) and queried",
    )
    parser.add_argument("--seed-only", action="store_true", help="stop after seeding (with --reuse: seed and keep)")
    parser.add_argument("--queries-only", action="store_true", help="skip the writer cost and the browser render")
    parser.add_argument("--skip-writer-cost", action="store_true")
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="only first render, old page against this one, "
                        "on the ledger --ledger names (already seeded): see render_only")  # fmt: skip
    parser.add_argument("--ledger", help="with --render-only: the seeded ledger's URL")
    parser.add_argument("--old-ref", default="47751b9", help="with --render-only: the git ref of the page to compare "
                        "('' for none)")  # fmt: skip
    parser.add_argument("--before-ref", help="with --render-only: also this ref's whole src tree, timed to the same "
                        "first screen (a change's before and after in one run)")  # fmt: skip
    args = parser.parse_args()
    if args.render_only:
        if not args.ledger:
            parser.error("--render-only needs --ledger URL")
        print(json.dumps(render_only(args.ledger, args.renders, args.old_ref, args.before_ref)))
        return
    if args.queries_only or args.seed_only:
        args.skip_writer_cost = args.skip_render = True
    results: dict[str, Any] = {"rows": args.rows, "days": args.days}
    tmp = Path(tempfile.mkdtemp(prefix="clawback-dash-bench-"))
    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    scratch: list[str] = []

    def pg_url(label: str) -> str:
        name = f"clawback_bench15_{label}_{secrets.token_hex(4)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        scratch.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    reused = {("postgresql" if u.startswith("postgresql") else "sqlite"): u if u.startswith("postgresql")
              else f"sqlite:///{Path(u).resolve()}" for u in args.reuse}  # fmt: skip
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally: drop the scratch databases
    try:
        for backend in args.backends.split(","):

            def url_for(label: str, backend: str = backend) -> str:
                return f"sqlite:///{tmp / (label + '.db')}" if backend == "sqlite" else pg_url(label)

            entry: dict[str, Any] = {}
            if not args.skip_writer_cost:
                print(f"== {backend}: writer cost per record", file=sys.stderr)
                entry["writer_cpu_us_per_record"] = writer_cost(url_for)
            url = reused.get(backend) or url_for("main")
            if reused.get(backend) and ledger_rows(url):
                print(f"== {backend}: reusing {url}", file=sys.stderr)
                entry["reused"] = reuse(url)
                print(f"   {entry['reused']}", file=sys.stderr)
            else:
                print(f"== {backend}: seeding {args.rows:,} rows", file=sys.stderr)
                if backend == "postgresql" and args.pg_seed == "backfill":
                    entry["seed"] = seed_by_backfill(url, args.rows, args.days)
                else:
                    entry["seed"] = seed(url, args.rows, args.days, args.seed_batch, tmp / f"{backend}.journal")
                print(f"   {entry['seed']}", file=sys.stderr)
            if args.seed_only:
                results[backend] = entry
                continue
            print(f"== {backend}: queries", file=sys.stderr)
            entry["queries"] = time_queries(url, args.repeats)
            for label, calls in entry["queries"].items():
                worst = max(((k, v) for k, v in calls.items() if not k.startswith("_")),
                            key=lambda kv: kv[1]["median_ms"])  # fmt: skip
                print(f"   {label}: slowest {worst[0]} {worst[1]['median_ms']} ms (median), "
                      f"all: {sum(c['median_ms'] for c in calls.values()):.0f} ms", file=sys.stderr)  # fmt: skip
            entry["top_entities_equal_group_by"] = verify_top_entities(url)
            print(f"   top entities == GROUP BY: {entry['top_entities_equal_group_by']}", file=sys.stderr)
            if not args.skip_render:
                print(f"== {backend}: first render in Chromium", file=sys.stderr)
                entry["first_render"] = first_render(url, args.renders)
                print(f"   {entry['first_render']}", file=sys.stderr)
            results[backend] = entry
            if not args.seed_only:
                args.out.write_text(json.dumps(results, indent=1))  # kept even if a later backend fails
    finally:
        with admin.connect() as conn:
            for name in scratch:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
