"""``clawback bench budgets``: budgets under concurrent load across gateway replicas, measured end to end.

It starts the simulator and ``replicas`` gateway processes (``clawback serve`` subprocesses, uvicorn each) on
one Redis (a key prefix of the run's own) and one PostgreSQL database (a scratch database, dropped
afterwards), and a local webhook receiver. Then three phases:

1. **Load.** ``requests`` requests, ``concurrency`` at a time, spread over the replicas, against one
   fail-closed budget: JSON and streams, the simulator failing some (500s, streams that break off) and the
   client abandoning some streams after their first chunk. From the ledger (PostgreSQL) and the counters
   (Redis, read through the admin API):
   * ``overshoot_usd``: the ledger's spend above the budget (must be 0);
   * ``refused_while_budget_left``: refusals of a request whose worst case fitted next to the spend the
     ledger had settled before the refusal (ledger rows finished earlier): must be 0;
   * ``counter_vs_ledger_usd``: the counter's spend minus the ledger's (must be 0, to the micro-dollar);
   * ``alert_latency_s``: for each threshold, from the moment the ledger's spend crossed it (the finish time of
     the request that took it over) to the webhook's arrival at the receiver; the worst of them.
2. **Override.** A second budget, exhausted, gets an emergency override for ``override_s``; requests pass,
   then are refused again: ``override_expiry_late_s`` is how long after its expiry the first refusal came.
3. **Crash.** Requests in flight on the last replica hold reservations on a third budget; the replica is
   killed (SIGKILL) and the counters are read until the reservations are gone: ``crash_released_after_s``
   against ``lease_s``.

The last line of output is one JSON object with every figure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clawback.pipeline.budget import worst_case
from clawback.pricing import from_micro_usd, load_price_book, to_micro_usd
from clawback.serving import BackgroundServer, free_port
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerReader, LedgerRecord
from clawback.storage.migrate import migrate

__all__ = ["BudgetBench", "BudgetBenchConfig", "run_budget_bench"]

ADMIN_TOKEN = "bench-" + secrets.token_hex(8)
MODELS = ("claude-sonnet-4-6", "claude-haiku-4-5")
WORDS = ("flat", "garden", "viewing", "offer", "budget", "station", "school", "parking", "balcony", "mortgage",
         "lease", "deposit")  # fmt: skip


@dataclass
class BudgetBenchConfig:
    replicas: int = 4
    concurrency: int = 200
    requests: int = 1000
    budget_usd: str = "0.60"
    thresholds: tuple[int, ...] = (50, 80, 90)
    lease_s: float = 5.0
    override_s: float = 3.0
    estimate_margin: float = 0.1
    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    redis_url: str = "redis://127.0.0.1:6379/0"
    error_rate_500: float = 0.08
    stream_drop_rate: float = 0.05
    ttft_ms: float = 80.0
    per_token_ms: float = 4.0
    seed: int = 0


@dataclass
class Sent:
    index: int
    replica: int
    worst_micro_usd: int
    status: int = 0
    request_id: str | None = None
    disconnected: bool = False
    error: str | None = None


@dataclass
class Receiver:
    """The webhook receiver: what arrived, when (wall clock, the same clock the ledger's timestamps use)."""

    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            payload = await request.json()
            with self.lock:
                self.received.append((time.time(), payload))
            return Response(status_code=204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])

    def alerts(self, budget_id: str) -> list[tuple[float, dict[str, Any]]]:
        with self.lock:
            return [(t, p["clawback"]) for t, p in self.received if p["clawback"]["budget_id"] == budget_id]


class BudgetBench:
    def __init__(self, config: BudgetBenchConfig, log: Any = print) -> None:
        self.config = config
        self.log = log
        self.tag = secrets.token_hex(4)
        self.prefix = f"clawback:bench:{self.tag}:"
        self.workdir = Path(tempfile.mkdtemp(prefix="clawback-bench-budgets-"))
        self.processes: list[subprocess.Popen[bytes]] = []
        self.gateways: list[str] = []
        self.receiver = Receiver()
        self.price_book = load_price_book()
        self.db_url = ""

    # -- the stack

    @contextlib.contextmanager
    def stack(self) -> Iterator[None]:
        admin = create_engine(self.config.database_url, isolation_level="AUTOCOMMIT")
        name = f"clawback_bench_{self.tag}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        self.db_url = make_url(self.config.database_url).set(database=name).render_as_string(hide_password=False)
        hook = BackgroundServer(self.receiver.app()).start()
        try:
            migrate(self.db_url)
            sim_port = free_port()
            self._spawn(["simulate", "--port", str(sim_port)], {
                "CLAWBACK_SIMULATOR__SEED": str(self.config.seed),
                "CLAWBACK_SIMULATOR__ERROR_RATE_500": str(self.config.error_rate_500),
                "CLAWBACK_SIMULATOR__STREAM_DROP_RATE": str(self.config.stream_drop_rate),
                "CLAWBACK_SIMULATOR__TTFT_MS": str(self.config.ttft_ms),
                "CLAWBACK_SIMULATOR__PER_TOKEN_MS": str(self.config.per_token_ms),
            })  # fmt: skip
            simulator = f"http://127.0.0.1:{sim_port}"
            self._wait_up(simulator + "/v1/models")
            for i in range(self.config.replicas):
                port = free_port()
                self._spawn(["serve", "--port", str(port), "--upstream", simulator], {
                    "CLAWBACK_LEDGER__URL": self.db_url,
                    "CLAWBACK_LEDGER__JOURNAL_PATH": str(self.workdir / f"ledger-{i}.journal"),
                    "CLAWBACK_LEDGER__FLUSH_INTERVAL_S": "0.1",
                    "CLAWBACK_GATEWAY__ADMIN_TOKEN": ADMIN_TOKEN,
                    "CLAWBACK_EXACT_CACHE__ENABLED": "false",
                    "CLAWBACK_BUDGETS__BACKEND": "redis",
                    "CLAWBACK_BUDGETS__REDIS_URL": self.config.redis_url,
                    "CLAWBACK_BUDGETS__REDIS_PREFIX": self.prefix,
                    "CLAWBACK_BUDGETS__LEASE_S": str(self.config.lease_s),
                    "CLAWBACK_BUDGETS__REFRESH_S": "0.5",
                    "CLAWBACK_BUDGETS__ESTIMATE_MARGIN": str(self.config.estimate_margin),
                    "CLAWBACK_BUDGETS__WEBHOOK_URL": hook.url + "/hook",
                })  # fmt: skip
                self.gateways.append(f"http://127.0.0.1:{port}")
            for url in self.gateways:
                self._wait_up(url + "/healthz")
            yield
        finally:
            for process in reversed(self.processes):
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in self.processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
            hook.stop()
            self._drop_redis_keys()
            if sys.exc_info()[0] is None:
                shutil.rmtree(self.workdir, ignore_errors=True)  # kept, with the processes' logs, on failure
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    def _spawn(self, args: list[str], env: dict[str, str]) -> None:
        log = (self.workdir / f"proc-{len(self.processes)}.log").open("wb")
        self.processes.append(subprocess.Popen([sys.executable, "-m", "clawback", *args], env={**os.environ, **env},
                                               stdout=log, stderr=subprocess.STDOUT))  # fmt: skip

    def _wait_up(self, url: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=2).status_code < 500:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{url} did not come up (logs in {self.workdir})")

    def _drop_redis_keys(self) -> None:
        import redis

        client = redis.Redis.from_url(self.config.redis_url)
        keys = list(client.scan_iter(match=self.prefix + "*", count=1000))
        for start in range(0, len(keys), 1000):
            client.delete(*keys[start : start + 1000])
        client.close()

    # -- helpers

    def _admin(self, method: str, path: str, replica: int = 0, body: dict[str, Any] | None = None) -> Any:
        headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "x-clawback-actor": "bench"}
        response = httpx.request(method, self.gateways[replica] + path, json=body, timeout=30, headers=headers)
        if response.status_code >= 400:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    def _create_budget(self, name: str, key_id: str, usd: str, **extra: Any) -> dict[str, Any]:
        spec = {"name": name, "scope": "key", "scope_value": key_id, "limit_usd": usd, "window": "day",
                "on_store_error": "closed", "forecast": False, **extra}  # fmt: skip
        created: dict[str, Any] = self._admin("POST", "/admin/budgets", body=spec)
        time.sleep(0.7)  # every replica re-reads the definitions within refresh_s (0.5 s)
        return created

    def _usage(self, ref: str, replica: int = 0) -> dict[str, Any]:
        usage: dict[str, Any] = self._admin("GET", f"/admin/budgets/{ref}", replica)["usage"][0]
        return usage

    def _body(self, i: int, rng_seed: int) -> dict[str, Any]:
        words = " ".join(WORDS[(i * 7 + j * 3 + rng_seed) % len(WORDS)] for j in range(20 + (i * 37) % 300))
        return {"model": MODELS[i % len(MODELS)], "max_tokens": 128 + (i * 97) % 897, "stream": i % 2 == 1,
                "messages": [{"role": "user", "content": f"Lead {i}: {words}"}]}  # fmt: skip

    async def _send(self, client: httpx.AsyncClient, sent: Sent, body: dict[str, Any], abandon: bool) -> None:
        try:
            if not body.get("stream"):
                response = await client.post("/v1/messages", json=body)
                sent.status = response.status_code
                sent.request_id = response.headers.get("x-clawback-request-id") or _error_request_id(response)
                return
            async with client.stream("POST", "/v1/messages", json=body) as response:
                sent.status = response.status_code
                sent.request_id = response.headers.get("x-clawback-request-id")
                if response.status_code != 200:
                    await response.aread()
                    sent.request_id = sent.request_id or _error_request_id(response)
                    return
                async for _ in response.aiter_bytes():
                    if abandon:
                        sent.disconnected = True
                        break
        except httpx.HTTPError as exc:
            sent.error = type(exc).__name__

    def _ledger_rows(self, key_id: str, at_least: int, timeout: float = 30.0) -> list[LedgerRecord]:
        deadline = time.monotonic() + timeout
        with LedgerReader(self.db_url) as reader:
            while True:
                rows = [r for r in reader.rows() if r.key_id == key_id and r.endpoint == "messages"]
                if len(rows) >= at_least or time.monotonic() > deadline:
                    return rows
                time.sleep(0.2)

    # -- phase 1: load

    async def _load(self, key: str, count: int) -> list[Sent]:
        gate = asyncio.Semaphore(self.config.concurrency)
        # Keep-alive shorter than uvicorn's 5 s: a connection the server is closing must not take a request.
        limits = httpx.Limits(max_connections=self.config.concurrency,
                              max_keepalive_connections=self.config.concurrency, keepalive_expiry=2.0)  # fmt: skip
        clients = [httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=120, limits=limits)
                   for url in self.gateways]  # fmt: skip
        results: list[Sent] = []

        async def one(i: int) -> None:
            body = self._body(i, self.config.seed)
            sent = Sent(i, i % len(clients), worst_case(self.price_book, body, self.config.estimate_margin).micro_usd)
            results.append(sent)
            async with gate:
                await self._send(clients[sent.replica], sent, body, abandon=body["stream"] and i % 4 == 1)

        try:
            await asyncio.gather(*(one(i) for i in range(count)))
        finally:
            for client in clients:
                await client.aclose()
        return results

    def load_phase(self, store: KeyStore) -> dict[str, Any]:
        key, secret = store.create("bench-load", {"team": "bench"})
        budget = self._create_budget("bench-load", key.id, self.config.budget_usd,
                                     thresholds=list(self.config.thresholds))  # fmt: skip
        limit = to_micro_usd(Decimal(self.config.budget_usd))
        self.log(f"load: {self.config.requests} requests, {self.config.concurrency} at a time, over "
                 f"{len(self.gateways)} replicas, budget ${self.config.budget_usd} (fail closed)")  # fmt: skip
        started = time.monotonic()
        sent = asyncio.run(self._load(secret, self.config.requests))
        elapsed = time.monotonic() - started
        reached = [s for s in sent if s.request_id]
        deadline = time.monotonic() + 30
        while self._usage(budget["id"])["reservations"] and time.monotonic() < deadline:
            time.sleep(0.2)
        rows = self._ledger_rows(key.id, len(reached))
        time.sleep(1.0)  # settles of the last streams and the last ledger batches
        rows = self._ledger_rows(key.id, len(reached))
        usage = self._usage(budget["id"])
        by_id = {s.request_id: s for s in reached}
        spend = sum(r.cost_micro_usd for r in rows)
        settled = sorted((r.finished_at.timestamp(), r.cost_micro_usd) for r in rows if r.cost_micro_usd)
        refused = [r for r in rows if r.budget_status == "refused"]
        wrongly = 0
        for row in refused:
            before = sum(c for t, c in settled if t < row.finished_at.timestamp())
            known = by_id.get(row.request_id)
            if known is not None and before + known.worst_micro_usd <= limit:
                wrongly += 1
        alerts = self._alert_latencies(budget["id"], settled, limit)
        statuses: dict[str, int] = {}
        for s in sent:
            label = "disconnected" if s.disconnected else (s.error or str(s.status))
            statuses[label] = statuses.get(label, 0) + 1
        return {
            "budget_usd": float(from_micro_usd(limit)),
            "ledger_spend_usd": float(from_micro_usd(spend)),
            "ledger_spend_micro_usd": spend,
            "overshoot_usd": float(from_micro_usd(max(0, spend - limit))),
            "refused": len(refused),
            "refused_while_budget_left": wrongly,
            "counter_spend_micro_usd": usage["spent_micro_usd"],
            "counter_vs_ledger_usd": float(from_micro_usd(usage["spent_micro_usd"] - spend)),
            "counter_vs_ledger_micro_usd": usage["spent_micro_usd"] - spend,
            "reservations_left": usage["reservations"],
            "ledger_rows": len(rows),
            "requests": len(sent),
            "outcomes": dict(sorted(statuses.items())),
            "budget_status": _count(r.budget_status or "-" for r in rows),
            "load_seconds": round(elapsed, 2),
            **alerts,
        }

    def _alert_latencies(self, budget_id: str, settled: list[tuple[float, int]], limit: int) -> dict[str, Any]:
        deadline = time.monotonic() + 35
        crossings: dict[int, float] = {}
        total = 0
        for at, cost in settled:
            total += cost
            for threshold in self.config.thresholds:
                if threshold not in crossings and total * 100 >= threshold * limit:
                    crossings[threshold] = at
        while time.monotonic() < deadline:  # wait for every alert due (30 s is the target)
            got = {a["threshold"] for _, a in self.receiver.alerts(budget_id) if a["kind"] == "threshold"}
            if set(crossings) <= got:
                break
            time.sleep(0.1)
        latencies: dict[str, float | None] = {}
        false_alerts = 0
        for received_at, alert in self.receiver.alerts(budget_id):
            crossed = crossings.get(alert["threshold"])
            if crossed is None:
                false_alerts += 1
                continue
            latencies[str(alert["threshold"])] = round(received_at - crossed, 3)
        for threshold in crossings:
            latencies.setdefault(str(threshold), None)  # crossed, never received
        measured = [v for v in latencies.values() if v is not None]
        missing = sum(v is None for v in latencies.values())
        return {"alert_latency_s": max(measured) if measured and not missing else None,
                "alert_latency_by_threshold_s": latencies, "alerts_missing": missing,
                "false_alerts": false_alerts}  # fmt: skip

    # -- phase 2: an override that expires

    def override_phase(self, store: KeyStore) -> dict[str, Any]:
        key, secret = store.create("bench-override", {"team": "bench"})
        body = {"model": MODELS[1], "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}]}
        budget = self._create_budget("bench-override", key.id, "0.000001")
        clients = [httpx.Client(base_url=url, headers={"x-api-key": secret}, timeout=30) for url in self.gateways]
        try:
            before = clients[0].post("/v1/messages", json=body).status_code
            override = {"limit_usd": "10", "duration_s": self.config.override_s, "reason": "bench: emergency"}
            made = self._admin("POST", f"/admin/budgets/{budget['id']}/override", body=override)
            expires = datetime.fromisoformat(made["expires_at"]).timestamp()
            time.sleep(0.7)  # every replica has re-read the definitions
            during = [c.post("/v1/messages", json=body).status_code for c in clients]
            # Each replica is asked until it refuses; times are when a request was sent (before the decision).
            first_refusal: list[float | None] = [None] * len(clients)
            last_allowed: list[float | None] = [None] * len(clients)
            deadline = expires + 10
            while time.time() < deadline and any(t is None for t in first_refusal):
                for i, client in enumerate(clients):
                    if first_refusal[i] is None:
                        sent_at = time.time()
                        if client.post("/v1/messages", json=body).status_code == 429:
                            first_refusal[i] = sent_at
                        else:
                            last_allowed[i] = sent_at
                time.sleep(0.01)
        finally:
            for client in clients:
                client.close()
        late = [None if t is None else round(t - expires, 3) for t in first_refusal]
        audit = [a["action"] for a in self._admin("GET", f"/admin/budgets/{budget['id']}")["audit"]]
        return {
            "override_before_status": before, "override_during_statuses": during, "override_s": self.config.override_s,
            "override_expiry_late_s": max((v for v in late if v is not None), default=None),
            "override_expiry_late_by_replica_s": late, "override_audit": audit,
            "override_allowed_after_expiry": sum(t is not None and t > expires for t in last_allowed),
        }  # fmt: skip

    # -- phase 3: a replica dies holding reservations

    async def _hold(self, url: str, key: str, count: int, outcomes: list[str]) -> None:
        async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=60) as client:

            async def one(i: int) -> None:
                body = {**self._body(i, 1), "stream": True, "max_tokens": 1024}
                try:
                    async with client.stream("POST", "/v1/messages", json=body) as response:
                        async for _ in response.aiter_bytes():
                            pass
                        outcomes.append(str(response.status_code))
                except httpx.HTTPError as exc:
                    outcomes.append(type(exc).__name__)

            await asyncio.gather(*(one(i) for i in range(count)))

    def crash_phase(self, store: KeyStore) -> dict[str, Any]:
        key, secret = store.create("bench-crash", {"team": "bench"})
        budget = self._create_budget("bench-crash", key.id, "1000")
        victim = len(self.gateways) - 1
        outcomes: list[str] = []
        loop_thread = threading.Thread(
            target=lambda: asyncio.run(self._hold(self.gateways[victim], secret, 20, outcomes)), daemon=True
        )
        loop_thread.start()
        held = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            held = self._usage(budget["id"])["reservations"]
            if held >= 5:
                break
            time.sleep(0.01)
        self.processes[1 + victim].kill()  # SIGKILL: no shutdown, no settles, the leases stay behind
        killed = time.monotonic()
        self.processes[1 + victim].wait()
        remaining = self._usage(budget["id"])["reservations"]
        while remaining and time.monotonic() - killed < self.config.lease_s * 3:
            time.sleep(0.05)
            remaining = self._usage(budget["id"])["reservations"]
        released_after = time.monotonic() - killed
        loop_thread.join(timeout=10)
        return {"crash_reservations_held": held, "crash_reservations_at_kill": held,
                "crash_released_after_s": round(released_after, 3) if remaining == 0 else None,
                "crash_reservations_left": remaining, "crash_client_outcomes": _count(outcomes),
                "lease_s": self.config.lease_s}  # fmt: skip

    def run(self) -> dict[str, Any]:
        with self.stack():
            store = KeyStore(self.db_url)
            report = {"replicas": len(self.gateways), "concurrency": self.config.concurrency}
            report.update(self.load_phase(store))
            report.update(self.override_phase(store))
            report.update(self.crash_phase(store))
            store.engine.dispose()
        return report


def _error_request_id(response: httpx.Response) -> str | None:
    with contextlib.suppress(ValueError, AttributeError):
        value = response.json().get("request_id")
        return value if isinstance(value, str) else None
    return None


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[value] = out.get(value, 0) + 1
    return dict(sorted(out.items()))


def run_budget_bench(config: BudgetBenchConfig, log: Any = print) -> dict[str, Any]:
    return BudgetBench(config, log).run()
