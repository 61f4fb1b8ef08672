"""Benchmark driver: fake upstream alone vs. each proxy variant, measured side by side with wrk.

Usage (from the repo root):
  .venv/bin/python benchmarks/stack/run.py [--duration 8] [--pin none|split] [--out results.json]

--pin none   no pinning, the kernel schedules wrk, upstream and proxy over both cores (default).
--pin split  wrk + upstream on CPU 1, proxy on CPU 0 (proxy gets a core of its own, as in production
             where the upstream is remote; the upstream-alone baseline then also runs on CPU 1 with wrk).

Everything binds to 127.0.0.1 only; every server is started in its own process group and stopped
(by that group id) after its runs. Total wall time with the default 8 s runs: about 6-7 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
BIN = ROOT / ".venv" / "bin"
LUA = HERE / "post.lua"
UP_PORT, PX_PORT = 9000, 9100
SCENARIOS = [(1, 1, False), (1, 1, True), (32, 2, False), (32, 2, True)]  # (connections, threads, stream)


def granian(app: str, port: int, workers: int = 1) -> list[str]:
    return [str(BIN / "granian"), "--interface", "asgi", "--loop", "uvloop", "--http", "1", "--no-ws",
            "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--working-dir", str(HERE), app]  # fmt: skip


def uvicorn(app: str, port: int, workers: int = 1) -> list[str]:
    return [str(BIN / "uvicorn"), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
            "--workers", str(workers), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--app-dir", str(HERE), app]  # fmt: skip


SERVERS = {"granian": granian, "uvicorn": uvicorn}


def start(cmd: list[str], port: int, cpus: str | None, env: dict[str, str] | None = None) -> subprocess.Popen:
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    proc = subprocess.Popen(
        cmd, env={**os.environ, **(env or {})}, start_new_session=True, stdout=subprocess.DEVNULL, stderr=sys.stderr
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return proc
        except OSError:
            pass
        time.sleep(0.2)
    stop(proc)
    raise RuntimeError(f"server did not come up: {cmd}")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _ms(v: str, unit: str) -> float:
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(port: int, conns: int, threads: int, stream: bool, duration: int, cpus: str | None) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", str(LUA),
           f"http://127.0.0.1:{port}/v1/messages"]  # fmt: skip
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    out = subprocess.run(
        cmd, env={**os.environ, "STREAM": "1" if stream else "0"}, capture_output=True, text=True, timeout=duration + 30
    ).stdout
    lat = {p: _ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)}
    errors = sum(int(x) for x in re.findall(r"(?:Non-2xx or 3xx responses|connect|read|write|timeout)[: ]+(\d+)", out))
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50": lat.get("50"), "p99": lat.get("99"), "errors": errors}


def measure(name: str, port: int, args, wrk_cpus: str | None) -> dict:
    res = {}
    wrk(port, 32, 2, False, 1, wrk_cpus)  # warm up pools / caches
    wrk(port, 32, 2, True, 1, wrk_cpus)
    for conns, threads, stream in SCENARIOS:
        key = f"c{conns}-{'sse' if stream else 'json'}"
        r = wrk(port, conns, threads, stream, args.duration, wrk_cpus)
        res[key] = r
        print(f"  {name:34s} {key:10s} rps={r['rps']:9.1f} p50={r['p50']}ms p99={r['p99']}ms err={r['errors']}",
              flush=True)  # fmt: skip
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--pin", choices=["none", "split"], default="none")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    args = ap.parse_args()
    wrk_cpus, up_cpus, px_cpus = (None, None, None) if args.pin == "none" else ("1", "1", "0")
    results: dict[str, dict] = {}

    # 1. upstream alone under each server; keep the faster one running as the proxies' upstream.
    for srv in SERVERS:
        proc = start(SERVERS[srv]("upstream:app", UP_PORT), UP_PORT, up_cpus)
        try:
            results[f"upstream alone ({srv})"] = measure(f"upstream alone ({srv})", UP_PORT, args, wrk_cpus)
        finally:
            stop(proc)
    c32 = ("c32-json", "c32-sse")
    best_up = max(SERVERS, key=lambda s: sum(results[f"upstream alone ({s})"][k]["rps"] for k in c32))
    print(f"upstream server: {best_up}", flush=True)
    up = start(SERVERS[best_up]("upstream:app", UP_PORT), UP_PORT, up_cpus)
    try:
        variants = [(srv, cli, "proxy:app", 1) for srv in SERVERS for cli in ("httpx", "aiohttp", "raw")]

        def run(srv: str, cli: str, app: str, workers: int) -> str:
            name = f"{srv}{'' if workers == 1 else f' x{workers}'} + {cli}"
            name += " + starlette" if "starlette" in app else ""
            env = {"PROXY_CLIENT": cli, "UPSTREAM_URL": f"http://127.0.0.1:{UP_PORT}"}
            proc = start(SERVERS[srv](app, PX_PORT, workers), PX_PORT, px_cpus, env)
            try:
                results[name] = measure(name, PX_PORT, args, wrk_cpus)
            finally:
                stop(proc)
            return name

        names = {run(*v): v for v in variants}
        best = max(names, key=lambda n: results[n]["c32-json"]["rps"] + results[n]["c32-sse"]["rps"])
        srv, cli, _, _ = names[best]
        print(f"best single-worker combination: {best}", flush=True)
        run(srv, cli, "proxy:starlette_app", 1)
        run(srv, cli, "proxy:app", 2)
    finally:
        stop(up)

    base = results[f"upstream alone ({best_up})"]
    Path(args.out).write_text(json.dumps({"pin": args.pin, "upstream": best_up, "results": results}, indent=1))
    print(f"\n### pin={args.pin}, upstream server={best_up}, wrk -d{args.duration}s\n")
    print(
        "| target | c1 json rps | c1 json p50 / p99 ms | c1 sse p50 / p99 ms | c32 json rps | c32 json p50 / p99 ms "
        "| c32 sse rps | c32 sse p50 / p99 ms | added p50 c1 json / sse ms | c32 ratio json / sse | errors |"
    )
    print("|" + "---|" * 11)
    for name, r in results.items():
        d_json, d_sse = (r[k]["p50"] - base[k]["p50"] for k in ("c1-json", "c1-sse"))
        q_json, q_sse = (r[k]["rps"] / base[k]["rps"] for k in ("c32-json", "c32-sse"))
        added, ratio = f"{d_json:.3f} / {d_sse:.3f}", f"{q_json:.0%} / {q_sse:.0%}"
        if name.startswith("upstream"):
            added, ratio = "-", "-"
        err = sum(x["errors"] for x in r.values())
        print(f"| {name} | {r['c1-json']['rps']:.0f} | {r['c1-json']['p50']:.3f} / {r['c1-json']['p99']:.3f} "
              f"| {r['c1-sse']['p50']:.3f} / {r['c1-sse']['p99']:.3f} | {r['c32-json']['rps']:.0f} "
              f"| {r['c32-json']['p50']:.2f} / {r['c32-json']['p99']:.2f} | {r['c32-sse']['rps']:.0f} "
              f"| {r['c32-sse']['p50']:.2f} / {r['c32-sse']['p99']:.2f} | {added} | {ratio} | {err} |")  # fmt: skip


if __name__ == "__main__":
    main()
