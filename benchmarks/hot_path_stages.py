"""Where the default pipeline's time goes, stage by stage (issue 19; on demand, not CI).

One ``clawback simulate`` process; in this process the gateway app (``GatewayApp`` called as ASGI, no HTTP server
in front) with the shipped defaults, each stage's ``handle`` wrapped to measure its own time: the time inside it
minus the time inside the stages below it (``call_next``). Requests go one at a time (the body of
``benchmarks/messages.lua``), so the time inside ``call_next`` is the rest of the pipeline plus the upstream call,
and nothing else runs on the loop meanwhile but that call's I/O. Work a stage schedules with ``call_soon`` runs
during the upstream call and is counted in ``upstream`` (the pruning shadow's planning); the ledger writer's work
is on its own thread and is not counted here. Times are this thread's CPU time (``time.thread_time_ns``), not
wall time: on a shared machine a descheduled process would otherwise charge its waits to whatever stage it was
in. Reported: the median and mean per stage in microseconds, and the whole ASGI call (its CPU: the upstream's
wait is not in it, the client side of the upstream call is).

    .venv/bin/python benchmarks/hot_path_stages.py --requests 2000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import benchlib as bl
import orjson
from gateway_instructions import BODY  # the wrk script's request (benchmarks/ is on sys.path when run)

from clawback.config import Settings
from clawback.gateway.app import GatewayApp, create_gateway_app
from clawback.pipeline.context import RequestContext
from clawback.pipeline.stage import CallNext, Reply, Stage
from clawback.storage.keys import KeyStore

RAW = orjson.dumps(BODY)


class Timed:
    """Accumulates, per stage, the time of ``handle`` less the time of ``call_next`` (ns)."""

    def __init__(self) -> None:
        self.samples: dict[str, list[int]] = defaultdict(list)
        self._current: dict[str, int] = defaultdict(int)

    def wrap(self, stage: Stage) -> None:
        inner = stage.handle

        async def handle(ctx: RequestContext, call_next: CallNext) -> Reply:
            below = 0

            async def timed_next(c: RequestContext) -> Reply:
                nonlocal below
                t = time.thread_time_ns()
                try:
                    return await call_next(c)
                finally:
                    below += time.thread_time_ns() - t

            start = time.thread_time_ns()
            try:
                return await inner(ctx, timed_next)
            finally:
                self._current[stage.name] += time.thread_time_ns() - start - below

        stage.handle = handle  # type: ignore[method-assign]

    def close_request(self) -> None:
        for name, ns in self._current.items():
            self.samples[name].append(ns)
        self._current.clear()


async def _post(app: GatewayApp, key: str) -> int:
    scope = {"type": "http", "method": "POST", "path": "/v1/messages", "query_string": b"", "headers": [
        (b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"x-api-key", key.encode()),
        (b"anthropic-version", b"2023-06-01"), (b"content-length", str(len(RAW)).encode())]}  # fmt: skip
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": RAW, "more_body": False}
        await asyncio.Event().wait()
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


async def measure(settings: Settings, requests: int) -> dict[str, list[int]]:
    app = create_gateway_app(settings)
    _, key = KeyStore(settings.ledger.url).create("stages", {})
    await app.gateway.start()
    timed = Timed()
    try:
        for _ in range(50):
            assert await _post(app, key) == 200
        for stage in app.gateway.pipeline.stages:
            timed.wrap(stage)
        whole: list[int] = []
        for _ in range(requests):
            start = time.thread_time_ns()
            assert await _post(app, key) == 200
            whole.append(time.thread_time_ns() - start)
            timed.close_request()
        timed.samples["(whole ASGI call, upstream included)"] = whole
        return timed.samples
    finally:
        await app.gateway.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE settings (CLAWBACK_...)")
    args = parser.parse_args()
    for item in args.env:
        k, _, v = item.partition("=")
        os.environ[k] = v
    with tempfile.TemporaryDirectory(prefix="clawback-stages-") as tmp:
        work = Path(tmp)
        port = bl.free_port()
        sim = bl.start_server("simulator", [bl.CLAWBACK, "simulate", "--port", str(port)], port, dict(os.environ), work)
        try:
            ledger = {"url": f"sqlite:///{work / 'ledger.db'}", "journal_path": str(work / "journal")}
            settings = Settings(upstream={"url": sim.url}, ledger=ledger)
            samples = asyncio.run(measure(settings, args.requests))
        finally:
            sim.stop()
    print(f"load average {bl.loadavg()}; code {bl.machine()['git']}; {args.requests} requests, one at a time")
    print(f"{'stage':40s} {'p50 us':>8s} {'mean us':>8s}")
    for name, values in samples.items():
        print(f"{name:40s} {statistics.median(values) / 1e3:8.1f} {statistics.fmean(values) / 1e3:8.1f}")


if __name__ == "__main__":
    main()
