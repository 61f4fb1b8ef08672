"""``clawback health``: is every part of the stack up? One check per part, for cron, CI and the dashboard.

Parts: the upstream (any HTTP answer counts as reachable: a 401 or 404 proves the network path and the server),
the ledger database (a query, its schema revision, its connections), Redis when a component is configured to
use it (PING, clients, memory), the running gateway's ``/healthz`` (ledger queue depth and journal backlog: the
ledger's lag; records lost), the journal file on this host, cache hit rates over the last 24 hours against
expected ranges, and budget counters once budgets exist.

A check is ``ok``, ``warn`` (out of its expected range, or a part that cannot be judged yet), ``skipped`` (not
configured) or ``down``; the command exits non-zero when any part is down and names it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from sqlalchemy import Engine, func, select, text

from clawback.config import ANTHROPIC_API_URL, Settings
from clawback.storage.engine import make_engine
from clawback.storage.journal import Journal
from clawback.storage.migrate import current_revision, head_revision

__all__ = ["Check", "HealthReport", "check_health", "expected_hit_rates"]

Status = Literal["ok", "warn", "skipped", "down"]
#: Hit rates outside these (over at least ``MIN_REQUESTS`` requests in 24 h) are a warning: a prompt cache that
#: stopped hitting, or an exact cache answering far more than usual (a key collision would look like that).
expected_hit_rates: dict[str, tuple[float, float]] = {"prompt cache (tokens)": (0.10, 1.0), "exact cache": (0.0, 0.9)}
MIN_REQUESTS = 50


@dataclass
class Check:
    part: str
    status: Status
    detail: str
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class HealthReport:
    checks: list[Check]

    @property
    def down(self) -> list[Check]:
        return [c for c in self.checks if c.status == "down"]

    @property
    def healthy(self) -> bool:
        return not self.down

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "down": [c.part for c in self.down],
            "checks": [asdict(c) for c in self.checks],
        }


def _timed(part: str, fn: Any, *args: Any) -> Check:
    started = time.perf_counter()
    try:
        check: Check = fn(*args)
    except Exception as exc:
        check = Check(part, "down", f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
    check.seconds = round(time.perf_counter() - started, 4)
    return check


def _upstream(settings: Settings, timeout: float) -> Check:
    url = settings.upstream.url or ANTHROPIC_API_URL
    response = httpx.get(f"{url.rstrip('/')}/v1/models", timeout=timeout)
    return Check(
        "upstream", "ok", f"{url} answered {response.status_code}", {"url": url, "status": response.status_code}
    )


def _database(engine: Engine) -> Check:
    figures: dict[str, Any] = {"backend": engine.dialect.name}
    path = engine.url.database
    if engine.dialect.name == "sqlite" and path and path != ":memory:" and not Path(path).exists():
        # Connecting would create an empty file: a health check must not invent a ledger.
        raise FileNotFoundError(f"no ledger database at {path}")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
        if engine.dialect.name == "postgresql":
            row = conn.execute(text(
                "SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()), "
                "current_setting('max_connections')::int"
            )).one()  # fmt: skip
            figures.update(connections=int(row[0]), max_connections=int(row[1]))
    revision, head = current_revision(engine), head_revision()
    figures.update(revision=revision, head=head)
    url = engine.url.render_as_string(hide_password=True)
    if revision != head:
        return Check("ledger database", "warn", f"{url} is at schema {revision}, this clawback ships {head}: run the "
                     "gateway (it migrates) or clawback dashboard", figures)  # fmt: skip
    return Check("ledger database", "ok", f"{url} reachable, schema {revision}", figures)


def _redis_urls(settings: Settings) -> dict[str, str]:
    urls: dict[str, str] = {}
    if settings.exact_cache.enabled and settings.exact_cache.backend == "redis":
        urls["exact_cache"] = settings.exact_cache.redis_url
    if settings.pruning.summary_store == "redis":
        urls["pruning summaries"] = settings.pruning.summary_redis_url
    return urls


async def _redis_ping(url: str, timeout_s: float) -> dict[str, Any]:
    from clawback.storage.redis_link import connect

    client = connect(url, timeout_s)
    try:
        await client.ping()
        info = await client.info()
        return {"connected_clients": info.get("connected_clients"), "blocked_clients": info.get("blocked_clients"),
                "used_memory": info.get("used_memory_human"), "maxclients": info.get("maxclients")}  # fmt: skip
    finally:
        await client.aclose()


def _redis(settings: Settings, timeout: float) -> Check:
    urls = _redis_urls(settings)
    if not urls:
        return Check("redis", "skipped", "no component is configured to use Redis")
    figures: dict[str, Any] = {}
    for user, url in sorted(set((u, v) for u, v in urls.items())):
        figures[user] = {"url": url, **asyncio.run(_redis_ping(url, timeout))}
    return Check("redis", "ok", f"{', '.join(sorted(set(urls.values())))} answered PING", figures)


def _gateway(url: str, timeout: float) -> Check:
    response = httpx.get(f"{url.rstrip('/')}/healthz", timeout=timeout)
    body = response.json()
    ledger = body.get("ledger", {})
    figures = {
        "status": body.get("status"),
        "ledger": ledger,
        "db_pool": body.get("db_pool"),
        "upstream": body.get("upstream"),
    }
    lag = f"ledger queue {ledger.get('queue_depth')}, journal backlog {ledger.get('journal_pending')}"
    if response.status_code != 200 or not ledger.get("database_up", False):
        return Check("gateway ledger writer", "down", f"{url}/healthz: {body.get('status')} ({lag}; the gateway "
                     "cannot write its ledger database: records go to its journal)", figures)  # fmt: skip
    if ledger.get("lost"):
        return Check("gateway ledger writer", "down", f"{ledger['lost']} ledger record(s) lost ({lag})", figures)
    return Check("gateway", "ok", f"{url} healthy; {lag}", figures)


def _journal(settings: Settings) -> Check:
    path = Path(settings.ledger.journal_path)
    if not path.exists() and not Path(str(path) + ".replay").exists():
        return Check("ledger journal", "ok", f"{path}: no backlog on this host", {"pending": 0})
    pending = Journal(path).pending
    status: Status = "ok" if pending == 0 else "warn"
    return Check(
        "ledger journal", status, f"{path}: {pending} record(s) waiting for the database", {"pending": pending}
    )


def _freshness_and_caches(engine: Engine, now: datetime) -> list[Check]:
    from clawback.dashboard.data import LedgerQueries, TimeRange
    from clawback.storage.ledger import ledger_table

    with engine.connect() as conn:
        last = conn.execute(select(func.max(ledger_table.c.started_at))).scalar_one()
    checks: list[Check] = []
    if last is not None:
        stamp = datetime.fromisoformat(last) if isinstance(last, str) else last
        stamp = stamp.replace(tzinfo=UTC) if stamp.tzinfo is None else stamp
        age = (now - stamp).total_seconds()
        checks.append(
            Check("ledger freshness", "ok", f"last request booked {age:,.0f} s ago", {"age_s": round(age, 1)})
        )
    queries = LedgerQueries(engine)
    if not queries.has_rollups():
        return checks
    tr = TimeRange(now - timedelta(days=1), now)
    requests = queries.totals(tr)["requests"]
    summary = queries.cache_summary(tr)
    rates = {str(r["cache"]): float(r["hit_rate"]) for _, r in summary.iterrows()}
    if requests < MIN_REQUESTS:
        checks.append(Check("cache hit rates", "ok", f"{requests} request(s) in 24 h: too few to judge", rates))
        return checks
    outside = [f"{name} {rate:.1%} outside {low:.0%}-{high:.0%}" for name, rate in rates.items()
               if name in expected_hit_rates for low, high in [expected_hit_rates[name]]
               if not low <= rate <= high]  # fmt: skip
    detail = "; ".join(outside) or ", ".join(f"{k} {v:.1%}" for k, v in rates.items()) or "no cache in use"
    checks.append(Check("cache hit rates", "warn" if outside else "ok", f"last 24 h: {detail}", rates))
    return checks


def _budgets(engine: Engine, settings: Settings, gateway_url: str | None, timeout: float) -> Check:
    """Budget counters against the ledger: the gateway's ``POST /admin/budgets:reconcile`` (the counters live in
    the gateway or in Redis, not in the database), read over HTTP only; skipped when no budget is defined."""
    from sqlalchemy import inspect

    if "budgets" not in inspect(engine).get_table_names():
        return Check("budget counters", "skipped", "no budget tables (budgets not in this version's schema)")
    with engine.connect() as conn:
        defined = int(conn.execute(text("SELECT count(*) FROM budgets")).scalar_one())
    if not defined:
        return Check("budget counters", "skipped", "no budgets defined")
    token = settings.gateway.admin_token
    if gateway_url is None or token is None:
        return Check("budget counters", "warn", f"{defined} budget(s); comparing their counters with the ledger needs "
                     "the gateway and gateway.admin_token", {"budgets": defined})  # fmt: skip
    response = httpx.post(f"{gateway_url.rstrip('/')}/admin/budgets:reconcile", timeout=timeout,
                          headers={"authorization": f"Bearer {token.get_secret_value()}"})  # fmt: skip
    response.raise_for_status()
    rows = response.json().get("reconciliation", [])
    drift = sum(abs(int(r.get("drift_micro_usd", 0))) for r in rows)
    used = [f"{r['budget']}/{r['scope_value'] or '*'} {r['spent_usd']} of {r['limit_usd']}" for r in rows
            if r.get("limit_usd")]  # fmt: skip
    figures = {"budgets": defined, "drift_micro_usd": drift, "windows": len(rows)}
    if drift:
        return Check("budget counters", "warn", f"counters differ from the ledger by ${drift / 1e6:,.6f} in total "
                     "(in-flight settles, or drift: clawback budgets show)", figures)  # fmt: skip
    return Check("budget counters", "ok", "counters equal the ledger; " + ("; ".join(used[:5]) or "no limits"), figures)


def check_health(settings: Settings, *, gateway_url: str | None, timeout: float = 3.0) -> HealthReport:
    """Run every check; a check that raises is ``down`` with the error as its detail."""
    checks = [_timed("upstream", _upstream, settings, timeout)]
    engine = make_engine(settings.ledger.url, connect_args=_connect_args(settings.ledger.url, timeout))
    try:
        database = _timed("ledger database", _database, engine)
        checks.append(database)
        checks.append(_timed("redis", _redis, settings, timeout))
        if gateway_url is not None:
            checks.append(_timed("gateway", _gateway, gateway_url, timeout))
        checks.append(_timed("ledger journal", _journal, settings))
        if database.status != "down":
            now = datetime.now(UTC)
            started = time.perf_counter()
            try:
                checks.extend(_freshness_and_caches(engine, now))
            except Exception as exc:
                checks.append(Check("cache hit rates", "warn", f"cannot read the rollups: {exc}".splitlines()[0]))
            checks[-1].seconds = round(time.perf_counter() - started, 4)
            checks.append(_timed("budget counters", _budgets, engine, settings, gateway_url, timeout))
    finally:
        engine.dispose()
    return HealthReport(checks)


def _connect_args(url: str, timeout: float) -> dict[str, Any]:
    """A bounded connect: a database that does not answer is down, not a hang."""
    if url.startswith("postgresql"):
        return {"connect_timeout": max(1, int(timeout))}
    return {"timeout": timeout}
