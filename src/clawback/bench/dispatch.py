"""``clawback bench dispatch``: many calls at once through the gateway, against an upstream with a concurrency limit.

Set-up: the simulator answers each call after ``latency_ms`` and refuses (429, as the API does) calls past
``concurrency_limit`` in progress; with ``fault_rate`` f it also fails a share f of the attempts it accepts, in three
equal parts: 500, 529, and a connection dropped mid-reply after the call was processed and billed. (The drop is
drawn among the attempts that escaped the other two, at (f/3)/(1-2f/3), so that the three parts are equal and add up
to f.) The gateway runs with its dispatch stage on and every optimization off, a fresh SQLite ledger, in front of
it. The client sends all ``calls`` at once (aiohttp, no retries of its own, one distinct request each, tagged
``x-clawback-user: call-<n>`` so that each ledger row names its call) and counts what it got.

Figures (the JSON line): ``wall_s`` (first send to last answer), ``ideal_s`` = ceil(calls / limit) x latency (the
upstream's limit fully used from the first millisecond), ``sequential_wall_s`` (an estimate, stated as such:
calls x the median latency of a few calls sent one at a time before the run), ``throughput_ratio`` =
sequential / wall, ``utilisation`` = the upstream's busy request-seconds / (wall x limit) (measured by the
simulator), ``upstream_429s`` (refusals the simulator sent), ``client_429s``, ``client_failures`` (any answer other
than a 200, or none), ``clients_with_two_answers`` (a body that is not exactly one message), ``ledger_rows``,
``duplicate_bookings`` (ledger rows beyond one per call), ``lost_attempts_billed_usd`` (what the simulator billed for
attempts whose answer the gateway never got) next to ``ledger_lost_attempts`` (those the ledger names), and the
dispatch stage's own report (learned limit, cuts, retries).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import orjson

from clawback.pricing import from_micro_usd
from clawback.serving import free_port
from clawback.storage.ledger import LedgerReader

__all__ = ["run_dispatch_bench"]

MODEL = "claude-haiku-4-5"


def _body(n: int) -> bytes:
    return orjson.dumps(
        {
            "model": MODEL,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": f"Score lead {n}: 3-bed in Austin, budget $450k."}],
        }
    )


async def _call(session: aiohttp.ClientSession, url: str, n: int) -> tuple[int, bytes, float]:
    started = time.monotonic()
    try:
        async with session.post(
            url, data=_body(n), headers={"x-clawback-user": f"call-{n}", "content-type": "application/json"}
        ) as response:
            return response.status, await response.read(), time.monotonic() - started
    except (aiohttp.ClientError, TimeoutError) as exc:
        return 0, repr(exc).encode(), time.monotonic() - started  # fmt: skip


async def _load(url: str, calls: int, offset: int) -> tuple[list[tuple[int, bytes, float]], float]:
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as session:
        started = time.monotonic()
        results = await asyncio.gather(*[_call(session, url, offset + n) for n in range(calls)])
        return list(results), time.monotonic() - started


async def _sequential_probe(url: str, count: int) -> list[float]:
    latencies = []
    async with aiohttp.ClientSession() as session:
        for n in range(count):
            _, _, seconds = await _call(session, url, -1 - n)
            latencies.append(seconds)
    return latencies


def _call_number(user: str | None) -> int:
    """The call a ledger row belongs to (-1 for the sequential probe's calls and anything else)."""
    if not user or not user.startswith("call-"):
        return -1
    try:
        return int(user[5:])
    except ValueError:
        return -1


def _one_message(body: bytes) -> bool:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(data, dict) and data.get("type") == "message" and body.count(b'"type":"message"') == 1


class _Process:
    """``clawback <command>`` in its own session (process group), stopped with SIGINT so that it drains."""

    def __init__(self, args: list[str], env: dict[str, str], port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clawback", *args, "--port", str(port)],
            env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(self.url + "/healthz" if args[0] == "serve" else self.url + "/_simulator/totals", timeout=1)
                return
            except httpx.HTTPError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                    self.stop()
                    raise RuntimeError(f"clawback {args[0]} did not start: {err[-2000:]}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGINT, 20.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue


def _env(prefix: str, values: dict[str, Any]) -> dict[str, str]:
    return {f"CLAWBACK_{prefix}__{k.upper()}": str(v) for k, v in values.items()}


def run_dispatch_bench(
    *, calls: int, latency_ms: float, concurrency_limit: int, fault_rate: float, seed: int = 0, probe_calls: int = 3
) -> dict[str, Any]:
    """Start the simulator and the gateway (two processes), load them, stop them, and report (module docstring)."""
    part = fault_rate / 3
    simulator_env = _env("SIMULATOR", {
        "seed": seed, "ttft_ms": latency_ms, "output_tokens": 12, "max_concurrent_requests": concurrency_limit,
        "error_rate_500": part, "error_rate_529": part, "connection_drop_rate": part / (1 - 2 * part) if part else 0,
    })  # fmt: skip
    admin = secrets.token_hex(8)
    with tempfile.TemporaryDirectory(prefix="clawback-bench-dispatch-") as tmp:
        ledger_url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        gateway_env = {
            **_env("GATEWAY", {"require_key": "false", "admin_token": admin}),
            **_env("LEDGER", {"url": ledger_url, "journal_path": str(Path(tmp) / "ledger.journal")}),
            **_env("EXACT_CACHE", {"enabled": "false"}),
            **_env("PROMPT_CACHE", {"enabled": "false"}),
            **_env("PRUNING", {"enabled": "false"}),
        }
        simulator = _Process(["simulate"], simulator_env, free_port())
        try:
            gateway = _Process(["serve", "--upstream", simulator.url], gateway_env, free_port())
            try:
                url = gateway.url + "/v1/messages"
                probe = asyncio.run(_sequential_probe(url, probe_calls)) if probe_calls else []
                httpx.post(simulator.url + "/_simulator/reset")
                results, wall = asyncio.run(_load(url, calls, 0))
                stats = httpx.get(gateway.url + "/admin/cache/stats", headers={"x-admin-token": admin}).json()
                dispatch_report = stats.get("dispatch") if isinstance(stats, dict) else None
            finally:
                gateway.stop()  # flushes the ledger
            billed = httpx.get(simulator.url + "/_simulator/requests").json()
            totals = httpx.get(simulator.url + "/_simulator/totals").json()
        finally:
            simulator.stop()
        with LedgerReader(ledger_url) as reader:
            rows = [r for r in reader.rows() if _call_number(r.user) >= 0]
    statuses = Counter(status for status, _, _ in results)
    per_call = Counter(r.user for r in rows)
    answered = {r.upstream_request_id for r in rows if r.upstream_request_id}
    lost_billed = [b for b in billed if b["status"] == 200 and b["request_id"] not in answered]
    ledger_lost = {i for r in rows for i in (r.labels.get("dispatch_lost") or "").split(",") if i}
    latency_s = latency_ms / 1000
    ideal = math.ceil(calls / concurrency_limit) * latency_s
    single = statistics.median(probe) if probe else latency_s
    sequential = calls * single
    return {
        "calls": calls,
        "latency_ms": latency_ms,
        "concurrency_limit": concurrency_limit,
        "fault_rate": fault_rate,
        "wall_s": round(wall, 3),
        "ideal_s": round(ideal, 3),
        "wall_over_ideal": round(wall / ideal, 3) if ideal else None,
        "sequential_wall_s": round(sequential, 3),
        "sequential_wall_s_is_estimate": True,
        "sequential_single_call_s": round(single, 4),
        "throughput_ratio": round(sequential / wall, 2) if wall else None,
        "utilisation": round(totals["busy_request_seconds"] / (wall * concurrency_limit), 3) if wall else None,
        "upstream_peak_concurrent": totals["peak_concurrent_requests"],
        "upstream_attempts": len(billed),
        "upstream_429s": sum(1 for b in billed if b["status"] == 429),
        "upstream_5xx": sum(1 for b in billed if b["status"] >= 500),
        "upstream_dropped": len(lost_billed),
        "client_statuses": {str(k): v for k, v in sorted(statuses.items())},
        "client_failures": sum(v for k, v in statuses.items() if k != 200),
        "client_429s": statuses.get(429, 0),
        "clients_with_two_answers": sum(1 for status, body, _ in results if status == 200 and not _one_message(body)),
        "client_p50_s": round(statistics.median(s for _, _, s in results), 3),
        "client_max_s": round(max(s for _, _, s in results), 3),
        "ledger_rows": len(rows),
        "duplicate_bookings": sum(n - 1 for n in per_call.values() if n > 1),
        "calls_without_row": calls - len(per_call),
        "ledger_rows_with_retries": sum(1 for r in rows if "dispatch_attempts" in r.labels),
        "lost_attempts_billed_usd": float(from_micro_usd(sum(b["cost_micro_usd"] for b in lost_billed))),
        "ledger_lost_attempts": len(ledger_lost),
        "ledger_lost_attempts_match_upstream": ledger_lost == {b["request_id"] for b in lost_billed},
        "ledger_cost_usd": float(from_micro_usd(sum(r.cost_micro_usd for r in rows))),
        "upstream_answered_cost_usd": float(
            from_micro_usd(sum(b["cost_micro_usd"] for b in billed if b["request_id"] in answered))
        ),
        "dispatch": dispatch_report,
    }
