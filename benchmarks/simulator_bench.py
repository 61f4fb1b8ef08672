"""Simulator throughput/latency benchmark (on demand, not CI).

Starts ``clawback simulate`` alone (one uvicorn process, its own process group, 127.0.0.1), loads
``POST /v1/messages`` with wrk (``benchmarks/messages.lua``: ~2 KB system prompt, 3-turn conversation,
max_tokens 64; plain and ``"stream": true``) at -t1 -c1 and -t2 -c32, and writes ``benchmarks/simulator.md``.

    .venv/bin/python benchmarks/simulator_bench.py              # 10 s per cell, ~50 s
    .venv/bin/python benchmarks/simulator_bench.py --duration 3 --out /tmp/sim.md
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import benchlib as bl


def table(results: list[bl.WrkResult]) -> str:
    rows = [
        "| mode | wrk | requests | rps | p50 ms | p90 ms | p99 ms | non-2xx | socket errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.mode} | -t{r.threads} -c{r.connections} | {r.requests} | {r.rps:.0f} | {bl.fmt_ms(r.p50_ms)} "
            f"| {bl.fmt_ms(r.p90_ms)} | {bl.fmt_ms(r.p99_ms)} | {r.non_2xx} | {r.socket_errors} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of c32 warm-up per mode (default 2)")
    parser.add_argument("--out", type=Path, default=bl.BENCH_DIR / "simulator.md")
    args = parser.parse_args()

    info = bl.machine()
    started = bl.now_utc()
    with tempfile.TemporaryDirectory(prefix="clawback-simbench-") as tmp:
        work = Path(tmp)
        script = bl.lua_script(work)
        port = bl.free_port()
        env = dict(os.environ)
        sim_argv = [bl.CLAWBACK, "simulate", "--port", str(port)]
        sim = bl.start_server("simulator", sim_argv, port, env, work)
        results: list[bl.WrkResult] = []
        try:
            url = sim.url + "/v1/messages"
            for mode in ("plain", "stream"):
                bl.run_wrk("warmup", "simulator", url, mode, 32, args.warmup, script)
            for mode in ("plain", "stream"):
                for conns in (1, 32):
                    r = bl.run_wrk(f"sim {mode} c{conns}", "simulator", url, mode, conns, args.duration, script)
                    print(f"{r.label:>20}: {r.rps:8.0f} rps  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms  "
                          f"errors {r.errors}", flush=True)  # fmt: skip
                    results.append(r)
        finally:
            sim.stop()
    load_after = bl.loadavg()

    commands = "\n".join(sorted({r.command.replace(str(script), "benchmarks/messages.lua") for r in results}))
    md = f"""# Simulator benchmark

`clawback simulate` alone (one uvicorn process: uvloop + httptools, Starlette app), loaded by wrk on the same
machine. Request: `benchmarks/messages.lua` (2.2 KB system prompt, 3-turn conversation, max_tokens 64; the
stream variant adds `"stream": true`). {args.duration} s per cell after a {args.warmup} s c32 warm-up per mode.

Date: {started}. Code: `{info["git"]}` (the servers load src/ when they start).
Machine: nproc {info["nproc"]}, CPU `{info["cpu_model"]}`, {info["memory"]} RAM, kernel
{info["kernel"]}, Python {info["python"]}, {info["wrk"]}. Load average before / after: {info["load_before"]} /
{load_after} (the machine is shared and noisy: read differences under ~15 % as noise).

{table(results)}

"non-2xx" is wrk's `Non-2xx or 3xx responses` counter (status >= 400); socket errors are connect/read/write/timeout.

Commands (simulator: `.venv/bin/clawback simulate --port PORT`; a `done()` hook that prints exact percentiles
is appended to the lua script at run time):

```sh
.venv/bin/python benchmarks/simulator_bench.py --duration {args.duration}
{commands.replace(f":{port}", ":PORT")}
```
"""
    args.out.write_text(md)
    args.out.with_suffix(".json").write_text(
        json.dumps({"date": started, "machine": info, "results": bl.as_dicts(results)}, indent=2) + "\n"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
