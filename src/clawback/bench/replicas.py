"""``clawback bench replicas``: several gateway processes on one PostgreSQL, under load, through a database restart.

What it proves is the ledger's promise at scale-out: every request the upstream billed is in the shared ledger
exactly once, at the upstream's price to the micro-dollar, even when PostgreSQL restarts in the middle of the
load. Everything is real: a private PostgreSQL cluster (``bench.throwaway``: the shared server is never touched),
``clawback simulate`` and N ``clawback serve`` processes on their own ports, each with its own journal; a
clawback key created in the shared key table authenticates every request on every replica. The load is
concurrent HTTP from this process, round-robin over the replicas, a quarter of it streamed; each request is
unique (no exact-cache hit), sent once (no client retry: a retried request is billed twice by any upstream).

The count is made at the two ends, independently: the simulator's billing log (``/_simulator/requests``: its own
request ids and prices) against the ledger table (``upstream_request_id``, ``cost_micro_usd``), read with SQL
after every replica has stopped cleanly (a clean stop drains the queue; before it, the bench waits until each
replica's journal is replayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from sqlalchemy import create_engine, text

from clawback.bench.throwaway import ThrowawayPostgres
from clawback.pricing import from_micro_usd
from clawback.serving import free_port
from clawback.storage.keys import KeyStore
from clawback.storage.migrate import migrate

__all__ = ["ReplicaRun", "run_replicas"]

#: A model in the bundled price table; any would do, the simulator and the ledger price it the same way.
MODEL = "claude-haiku-4-5"


@dataclass
class ReplicaRun:
    """Counters of one run, filled as it goes; ``report()`` is the JSON object the command prints last."""

    replicas: int
    requests: int
    concurrency: int
    restart_db: bool
    client_ok: int = 0
    client_errors: dict[str, int] = field(default_factory=dict)
    db_restart_at_request: int | None = None
    db_restart_s: float | None = None
    load_s: float = 0.0
    drain_s: float = 0.0
    replica_stats: list[dict[str, Any]] = field(default_factory=list)
    simulator_billed: int = 0
    simulator_cost_micro_usd: int = 0
    ledger_rows: int = 0
    ledger_duplicates: int = 0
    ledger_missing: int = 0
    ledger_unmatched: int = 0
    ledger_cost_micro_usd: int = 0
    journal_left: int = 0

    def report(self) -> dict[str, Any]:
        def total(name: str) -> int:
            return sum(int(s.get(name, 0)) for s in self.replica_stats)

        ok = (
            self.ledger_rows == self.simulator_billed
            and self.ledger_missing == 0
            and self.ledger_duplicates == 0
            and self.ledger_cost_micro_usd == self.simulator_cost_micro_usd
            and self.journal_left == 0
        )
        return {
            "requests": self.requests,
            "replicas": self.replicas,
            "concurrency": self.concurrency,
            "client_ok": self.client_ok,
            "client_errors": self.client_errors,
            "simulator_billed": self.simulator_billed,
            "ledger_rows": self.ledger_rows,
            "ledger_duplicates": self.ledger_duplicates,
            "ledger_missing": self.ledger_missing,
            "ledger_unmatched": self.ledger_unmatched,
            "ledger_cost_usd": str(from_micro_usd(self.ledger_cost_micro_usd)),
            "simulator_cost_usd": str(from_micro_usd(self.simulator_cost_micro_usd)),
            "ledger_cost_micro_usd": self.ledger_cost_micro_usd,
            "simulator_cost_micro_usd": self.simulator_cost_micro_usd,
            "pool_timeouts": total("pool_timeouts"),
            "restart_db": self.restart_db,
            "db_restart_at_request": self.db_restart_at_request,
            "db_restart_s": None if self.db_restart_s is None else round(self.db_restart_s, 3),
            "ledger_write_errors": total("write_errors"),
            "ledger_journaled": total("journaled"),
            "ledger_replayed": total("replayed"),
            "journal_left": self.journal_left,
            "load_s": round(self.load_s, 2),
            "requests_per_s": round(self.requests / self.load_s, 1) if self.load_s else None,
            "drain_s": round(self.drain_s, 2),
            "ok": ok,
        }


def _python_m_clawback(*args: str) -> list[str]:
    return [sys.executable, "-m", "clawback", *args]


def _wait_http(url: str, process: subprocess.Popen[bytes], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before answering {url}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s") from None
            time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            _stop(process, timeout=30)


def _body(i: int, stream: bool) -> bytes:
    # Unique text per request: no exact-cache hit, so every request reaches the upstream and is billed there.
    return orjson.dumps(
        {
            "model": MODEL,
            "max_tokens": 32 + i % 32,
            "stream": stream,
            "messages": [{"role": "user", "content": f"replica bench request {i}: summarise item {i * 7919 % 10007}"}],
        }
    )


async def _drive(
    urls: list[str], secret: str, run: ReplicaRun, on_progress: Callable[[int], None], stream_every: int
) -> None:
    done = 0
    next_index = iter(range(run.requests))
    limits = httpx.Limits(max_connections=run.concurrency, max_keepalive_connections=run.concurrency)
    headers = {"x-api-key": secret, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(60.0)) as client:

        async def worker() -> None:
            nonlocal done
            for i in next_index:
                stream = stream_every > 0 and i % stream_every == 0
                url = urls[i % len(urls)] + "/v1/messages"
                try:
                    async with client.stream("POST", url, content=_body(i, stream), headers=headers) as response:
                        payload = await response.aread()
                    complete = response.status_code == 200 and (
                        b"event: message_stop" in payload if stream else b'"stop_reason"' in payload
                    )
                    outcome = "ok" if complete else f"http_{response.status_code}"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                if outcome == "ok":
                    run.client_ok += 1
                else:
                    run.client_errors[outcome] = run.client_errors.get(outcome, 0) + 1
                done += 1
                on_progress(done)

        await asyncio.gather(*(worker() for _ in range(run.concurrency)))


def _ledger_health(url: str) -> dict[str, Any]:
    body = httpx.get(url + "/healthz", timeout=5.0).json()
    ledger: dict[str, Any] = body["ledger"]
    return ledger


def _wait_drained(urls: list[str], timeout: float) -> list[dict[str, Any]]:
    """Every replica's ledger: database up, queue empty, journal replayed (or the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        stats = [_ledger_health(u) for u in urls]
        if all(s["database_up"] and s["queue_depth"] == 0 and s["journal_pending"] == 0 for s in stats):
            return stats
        if time.monotonic() > deadline:
            return stats
        time.sleep(0.25)


def run_replicas(
    *,
    replicas: int = 3,
    requests: int = 3000,
    concurrency: int = 24,
    restart_db: bool = False,
    db_down_s: float = 2.0,
    stream_every: int = 4,
    log: Callable[[str], None] = print,
) -> ReplicaRun:
    """Run the whole drill and count; every process and the private cluster are gone when it returns.

    ``restart_db``: after half the requests, PostgreSQL is stopped (``-m fast``: every connection cut), kept down
    ``db_down_s`` while the load goes on, and started again on the same port.
    """
    run = ReplicaRun(replicas=replicas, requests=requests, concurrency=concurrency, restart_db=restart_db)
    workdir = Path(tempfile.mkdtemp(prefix="clawback-replicas-"))
    log(f"starting a private PostgreSQL cluster in {workdir} ...")
    pg = ThrowawayPostgres(max_connections=100).start()
    try:
        migrate(pg.url)
        keys = KeyStore(pg.url)
        _, secret = keys.create("bench-replicas", {"team": "bench", "feature": "replicas"})
        keys.engine.dispose()
        with _processes() as processes:
            sim_port = free_port()
            sim_url = f"http://127.0.0.1:{sim_port}"
            sim = subprocess.Popen(
                _python_m_clawback("simulate", "--port", str(sim_port)),
                stdout=subprocess.DEVNULL, stderr=(workdir / "simulator.log").open("wb"),
            )  # fmt: skip
            processes.append(sim)
            _wait_http(sim_url + "/_simulator/totals", sim, "the simulator")
            urls: list[str] = []
            for n in range(replicas):
                port = free_port()
                env = {
                    **os.environ,
                    "CLAWBACK_LEDGER__URL": pg.url,
                    "CLAWBACK_LEDGER__JOURNAL_PATH": str(workdir / f"replica-{n}.journal"),
                    "CLAWBACK_GATEWAY__REPLICAS": str(replicas),
                }
                env.pop("ANTHROPIC_API_KEY", None)
                replica = subprocess.Popen(
                    _python_m_clawback("serve", "--port", str(port), "--upstream", sim_url),
                    env=env, stdout=subprocess.DEVNULL, stderr=(workdir / f"replica-{n}.log").open("wb"),
                )  # fmt: skip
                processes.append(replica)
                urls.append(f"http://127.0.0.1:{port}")
            for n, (url, replica) in enumerate(zip(urls, processes[1:], strict=True)):
                _wait_http(url + "/healthz", replica, f"replica {n} (log: {workdir / f'replica-{n}.log'})")
            log(f"{replicas} replicas up ({', '.join(urls)}), simulator {sim_url}; {requests} requests ...")

            restart_thread: threading.Thread | None = None

            def restart() -> None:
                # Stopped, kept down ``db_down_s``, started again: a bare ``pg_ctl restart`` can fall between two
                # batches of a light load (pre-ping then hides it), and then it proves nothing about the journal.
                started = time.monotonic()
                pg.stop_server()
                time.sleep(db_down_s)
                pg.start()
                run.db_restart_s = time.monotonic() - started

            def on_progress(done: int) -> None:
                nonlocal restart_thread
                if restart_db and restart_thread is None and done >= requests // 2:
                    run.db_restart_at_request = done
                    log(f"restarting PostgreSQL after {done} requests ...")
                    restart_thread = threading.Thread(target=restart, name="pg-restart")
                    restart_thread.start()
                if done % max(1, requests // 10) == 0:
                    log(f"  {done}/{requests}")

            started = time.monotonic()
            asyncio.run(_drive(urls, secret, run, on_progress, stream_every))
            run.load_s = time.monotonic() - started
            if restart_thread is not None:
                restart_thread.join()
            started = time.monotonic()
            run.replica_stats = _wait_drained(urls, timeout=120.0)
            for url, replica in zip(urls, processes[1:], strict=True):
                _stop(replica)
                if replica.returncode not in (0, -signal.SIGTERM):
                    log(f"replica {url} exited with {replica.returncode}")
            run.drain_s = time.monotonic() - started
            billed = httpx.get(sim_url + "/_simulator/requests", timeout=60.0).json()
        run.journal_left = sum(
            sum(1 for line in path.open("rb") if line.strip()) for path in workdir.glob("replica-*.journal*")
            if not path.name.endswith(".bad")
        )  # fmt: skip
        _count(pg.url, billed, run)
    finally:
        pg.stop()
    if run.report()["ok"]:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        log(f"logs and journals kept in {workdir}")
    return run


def _count(url: str, billed: list[dict[str, Any]], run: ReplicaRun) -> None:
    """The two ends compared: the simulator's billing log against the ledger table, by the upstream's request id."""
    messages = [b for b in billed if b["endpoint"] == "messages"]
    run.simulator_billed = len(messages)
    run.simulator_cost_micro_usd = sum(int(b["cost_micro_usd"]) for b in messages)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT upstream_request_id, cost_micro_usd FROM ledger")).all()
    finally:
        engine.dispose()
    run.ledger_rows = len(rows)
    run.ledger_cost_micro_usd = sum(int(cost) for _, cost in rows)
    seen: dict[str | None, int] = {}
    for upstream_id, _ in rows:
        seen[upstream_id] = seen.get(upstream_id, 0) + 1
    run.ledger_duplicates = sum(n - 1 for uid, n in seen.items() if uid is not None and n > 1)
    billed_ids = {b["request_id"] for b in messages}
    run.ledger_missing = len(billed_ids - seen.keys())
    run.ledger_unmatched = sum(n for uid, n in seen.items() if uid not in billed_ids)
