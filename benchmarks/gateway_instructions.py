"""The gateway's cost per request in CPU instructions, this checkout against another (on demand, not CI).

On a shared machine wall-clock latency moves with the neighbours; instructions do not (``valgrind --tool=callgrind``
counts them, whatever else runs). Starts one ``clawback simulate`` (this checkout's) and, one after the other,
``clawback serve`` of this checkout and of ``--other`` (``OTHER/.venv/bin/python``) under callgrind, three times
each: with a warm-up only (20 plain and 20 streamed requests, the body of ``benchmarks/messages.lua``), with the
warm-up and ``--requests`` more plain ones, and with the warm-up and ``--requests`` more streamed ones, sent one at
a time; each process is stopped with SIGINT (a clean shutdown: the ledger drains) and callgrind writes its total.
The difference to the warm-up-only run, divided by ``--requests``, is the cost of one request: start-up and
shutdown cancel out, and everything the process executes per request is counted (event loop, pipeline, ledger
thread, GC).

    .venv/bin/python benchmarks/gateway_instructions.py --other ../clawback-before --requests 300 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl
import httpx

SYSTEM = (
    "You are a careful assistant for the accounting team of a mid-sized company. Answer concisely, "
    "cite the invoice numbers you rely on, and say so when the data is not enough to answer. "
) * 12
BODY = {
    "model": "claude-sonnet-4-5-20250929", "max_tokens": 64, "system": SYSTEM,
    "metadata": {"user_id": "user-1234"}, "temperature": 0.2,
    "messages": [
        {"role": "user", "content": "Earlier this quarter we received invoices 1041 to 1057 from Northwind. "
                                    "Which of them are still unpaid?"},
        {"role": "assistant", "content": "Invoices 1049, 1052 and 1057 are still open; the rest were paid in full."},
        {"role": "user", "content": [{"type": "text", "text": "What is the total amount still owed? Reply in one "
                                                              "sentence."}]},
    ],
}  # fmt: skip


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((bl.HOST, port), timeout=0.2):
            return
        time.sleep(0.5)
    raise RuntimeError(f"nothing listening on {port} after {timeout:.0f} s")


def send(client: httpx.Client, count: int, stream: bool) -> None:
    body = {**BODY, "stream": True} if stream else BODY
    for _ in range(count):
        response = client.post("/v1/messages", json=body)
        response.read()
        if response.status_code != 200:
            raise RuntimeError(f"HTTP {response.status_code}: {response.text[:300]}")


def instructions(dump: Path) -> int:
    match = re.search(r"^(?:summary|totals):\s+(\d+)", dump.read_text(errors="replace"), re.M)
    if match is None:
        raise RuntimeError(f"no totals in {dump}")
    return int(match.group(1))


def run_once(checkout: Path, sim_url: str, home: Path, plain: int, stream: int) -> int:
    """Instructions of one gateway process's whole life: start, warm-up, ``plain`` + ``stream`` requests, stop."""
    venv = checkout / ".venv" / "bin"
    home.mkdir()
    # PYTHONPATH: the checkout's own code, also when its .venv is another checkout's (a worktree's symlink)
    env = dict(os.environ, CLAWBACK_LEDGER__URL=f"sqlite:///{home / 'ledger.db'}",
               CLAWBACK_LEDGER__JOURNAL_PATH=str(home / "ledger.journal"),
               PYTHONPATH=str(checkout / "src"))  # fmt: skip
    out = subprocess.run([str(venv / "clawback"), "keys", "create", "bench"], env=env, capture_output=True,
                         text=True, check=True, timeout=120)  # fmt: skip
    key = [x.strip() for x in out.stdout.splitlines() if x.strip()][-1]
    port = bl.free_port()
    dump = home / "callgrind.out"
    argv = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={dump}", str(venv / "python"),
            str(venv / "clawback"), "serve", "--port", str(port), "--upstream", sim_url]  # fmt: skip
    with (home / "gateway.log").open("wb") as log:
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    bl._children.append(proc)
    try:
        wait_listening(port, proc)
        with httpx.Client(base_url=f"http://{bl.HOST}:{port}", headers={"x-api-key": key}, timeout=300) as client:
            send(client, 20, False)
            send(client, 20, True)
            send(client, plain, False)
            send(client, stream, True)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(300)
    finally:
        bl._stop_group(proc)
        with contextlib.suppress(ValueError):
            bl._children.remove(proc)
    return instructions(dump)


def measure(name: str, checkout: Path, sim_url: str, work: Path, requests: int) -> dict[str, float]:
    """Instructions per plain and per streamed request (each run's total less the warm-up-only run's)."""
    tag = f"{name}-{time.monotonic_ns()}"
    base = run_once(checkout, sim_url, work / f"{tag}-base", 0, 0)
    plain = run_once(checkout, sim_url, work / f"{tag}-plain", requests, 0)
    stream = run_once(checkout, sim_url, work / f"{tag}-stream", 0, requests)
    return {"plain": (plain - base) / requests, "stream": (stream - base) / requests, "base": float(base)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", type=Path, required=True, help="a checkout with its own .venv")
    parser.add_argument("--requests", type=int, default=300, help="requests counted per mode")
    parser.add_argument("--rounds", type=int, default=2, help="this, other, this, other, ...")
    parser.add_argument("--out", type=Path, default=bl.BENCH_DIR / "gateway-instructions.json")
    args = parser.parse_args()
    checkouts = {"this": bl.ROOT, "other": args.other.resolve()}
    heads = {n: subprocess.run(["git", "-C", str(p), "log", "-1", "--format=%h %s"], capture_output=True,
                               text=True).stdout.strip()[:90] for n, p in checkouts.items()}  # fmt: skip
    results: dict[str, list[dict[str, float]]] = {"this": [], "other": []}
    with tempfile.TemporaryDirectory(prefix="clawback-gwinstr-") as tmp:
        work = Path(tmp)
        sim_port = bl.free_port()
        sim = bl.start_server("simulator", [bl.CLAWBACK, "simulate", "--port", str(sim_port)], sim_port,
                              dict(os.environ), work)  # fmt: skip
        try:
            for _ in range(args.rounds):
                for name, checkout in checkouts.items():
                    figures = measure(name, checkout, sim.url, work, args.requests)
                    results[name].append(figures)
                    print(
                        f"{name}: plain {figures['plain'] / 1e6:.3f} M, stream {figures['stream'] / 1e6:.3f} M "
                        f"instructions/request (warm-up-only run {figures['base'] / 1e9:.2f} G)",
                        flush=True,
                    )
        finally:
            sim.stop()
    summary = {"argv": sys.argv[1:], "heads": heads, "requests": args.requests, "results": results}
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    for mode in ("plain", "stream"):
        this = min(r[mode] for r in results["this"])
        other = min(r[mode] for r in results["other"])
        print(f"{mode}: this {this / 1e6:.3f} M, other {other / 1e6:.3f} M instructions/request "
              f"({(this / other - 1) * 100:+.1f} %)")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
