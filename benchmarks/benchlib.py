"""Shared helpers for the on-demand benchmarks: processes in their own process groups, wrk runs, machine info.

Not a test and not run in CI. Everything listens on 127.0.0.1 only; every process started here is started in a
new session (its own process group) and the whole group is stopped at exit, also on Ctrl-C.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "benchmarks"
VENV_BIN = ROOT / ".venv" / "bin"
CLAWBACK = str(VENV_BIN / "clawback")
LUA = BENCH_DIR / "messages.lua"
HOST = "127.0.0.1"

_children: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop_group(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGINT the process group (uvicorn shuts down cleanly and the ledger drains), then TERM, then KILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def stop_all() -> None:
    while _children:
        _stop_group(_children.pop())


atexit.register(stop_all)


def _on_signal(signum: int, frame: object) -> None:
    stop_all()
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, _on_signal)


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def stop(self) -> None:
        _stop_group(self.proc)
        if self.proc in _children:
            _children.remove(self.proc)


def start_server(
    name: str, argv: list[str], port: int, env: dict[str, str], log_dir: Path, cpus: str | None = None
) -> Server:
    """Start ``argv`` in a new session (own process group) and wait until ``port`` accepts connections."""
    if cpus is not None:
        argv = ["taskset", "-c", cpus, *argv]
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
    _children.append(proc)
    server = Server(name, port, proc, log_path)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), timeout=0.2):
            return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError(f"{name} did not listen on {port} within 30 s:\n{log_path.read_text()[-3000:]}")


def http_get_json(url: str, timeout: float = 5.0) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        data: dict[str, object] = json.loads(resp.read())
        return data


# -- wrk ------------------------------------------------------------------------------------------------------

# Appended to the request script: wrk calls done() once, with the summary of all threads; latency in µs.
_DONE_LUA = """
function done(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"status_errors\\":%d,\\"connect\\":%d,\\"read\\":%d," ..
    "\\"write\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d,\\"p90_us\\":%d,\\"p99_us\\":%d,\\"mean_us\\":%.1f}\\n",
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean))
end
"""


def lua_script(out_dir: Path) -> Path:
    """messages.lua + a done() hook that prints exact numbers; written next to the run's other files."""
    path = out_dir / "messages-run.lua"
    path.write_text(LUA.read_text() + _DONE_LUA)
    return path


@dataclass
class WrkResult:
    label: str
    target: str
    mode: str  # "plain" | "stream"
    connections: int
    threads: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    non_2xx: int  # wrk's "Non-2xx or 3xx responses" (it counts status >= 400)
    socket_errors: int
    command: str
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def errors(self) -> int:
        return self.non_2xx + self.socket_errors


def wrk_command(url: str, connections: int, duration: int, script: Path, cpus: str | None = None) -> list[str]:
    threads = 1 if connections == 1 else 2
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url]
    return ["taskset", "-c", cpus, *argv] if cpus is not None else argv


def run_wrk(
    label: str,
    target: str,
    url: str,
    mode: str,
    connections: int,
    duration: int,
    script: Path,
    api_key: str | None = None,
    cpus: str | None = None,
    watch: dict[str, int] | None = None,
) -> WrkResult:
    """One wrk run. ``watch`` = {name: pid}: report each process's CPU use during the run (% of one core)."""
    argv = wrk_command(url, connections, duration, script, cpus)
    watch = watch or {}
    cpu_before = {name: cpu_seconds(pid) for name, pid in watch.items()}
    wrk_before = children_cpu_seconds()
    wall = time.monotonic()
    env = dict(os.environ, STREAM="1" if mode == "stream" else "0")
    if api_key:
        env["API_KEY"] = api_key
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=duration + 60, check=False)
    wall = time.monotonic() - wall
    cpu = {name: round(100 * (cpu_seconds(pid) - cpu_before[name]) / wall) for name, pid in watch.items()}
    cpu["wrk"] = round(100 * (children_cpu_seconds() - wrk_before) / wall)
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr}\n{out.stdout}")
    line = next((x for x in out.stdout.splitlines() if x.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"no WRKJSON line in wrk output:\n{out.stdout}")
    d = json.loads(line[len("WRKJSON ") :])
    seconds = d["duration_us"] / 1e6
    env_prefix = f"STREAM={env['STREAM']}" + (" API_KEY=<key>" if api_key else "")
    return WrkResult(
        label=label,
        target=target,
        mode=mode,
        connections=connections,
        threads=1 if connections == 1 else 2,
        duration_s=seconds,
        requests=d["requests"],
        rps=d["requests"] / seconds if seconds else 0.0,
        p50_ms=d["p50_us"] / 1000,
        p90_ms=d["p90_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        mean_ms=d["mean_us"] / 1000,
        non_2xx=d["status_errors"],
        socket_errors=d["connect"] + d["read"] + d["write"] + d["timeout"],
        command=env_prefix + " " + " ".join(str(a) for a in argv).replace(str(ROOT) + "/", ""),
        extra={"cpu_pct": cpu},
    )


def median_result(results: list[WrkResult]) -> WrkResult:
    """Per-metric median over repeats (requests and errors summed, so nothing is hidden)."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    return WrkResult(
        label=first.label,
        target=first.target,
        mode=first.mode,
        connections=first.connections,
        threads=first.threads,
        duration_s=sum(r.duration_s for r in results),
        requests=sum(r.requests for r in results),
        rps=statistics.median(r.rps for r in results),
        p50_ms=statistics.median(r.p50_ms for r in results),
        p90_ms=statistics.median(r.p90_ms for r in results),
        p99_ms=statistics.median(r.p99_ms for r in results),
        mean_ms=statistics.median(r.mean_ms for r in results),
        non_2xx=sum(r.non_2xx for r in results),
        socket_errors=sum(r.socket_errors for r in results),
        command=first.command,
        extra={
            "repeats": len(results),
            "rps_each": [round(r.rps, 1) for r in results],
            "p50_each": [round(r.p50_ms, 3) for r in results],
            "cpu_pct": {
                k: round(statistics.median(r.extra["cpu_pct"][k] for r in results))  # type: ignore[index]
                for k in results[0].extra.get("cpu_pct", {})  # type: ignore[union-attr]
            },
        },
    )


def as_dicts(results: list[WrkResult]) -> list[dict[str, object]]:
    return [asdict(r) for r in results]


# -- machine --------------------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    head = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h %ci"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True)
    return {
        "git": head.stdout.strip() + (" (src/ has uncommitted changes)" if dirty.stdout.strip() else ""),
        "nproc": str(os.cpu_count()),
        "cpu_model": model,
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": (wrk_version.stdout or wrk_version.stderr).split(" Copyright")[0].strip(),
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def cpu_seconds(pgid: int) -> float:
    """utime + stime of every live process in process group ``pgid`` (all threads; granian's workers too)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields: state, ppid, pgrp, ..., utime (11), stime (12)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU of reaped children (wrk, once subprocess.run has waited for it)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def fmt_ms(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"
