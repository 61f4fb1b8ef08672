"""Two gateways side by side against one simulator, in one run (on demand, not CI).

For a change to the gateway's request path: is the gateway's added latency no worse than another checkout's?
Starts one ``clawback simulate`` (this checkout's) and two ``clawback serve --upstream <simulator>``: this
checkout's and ``--other``'s (``OTHER/.venv/bin/clawback``, e.g. a worktree of the commit before the change with
its own venv), each with its own SQLite ledger and key. Then, per mode (plain, ``"stream": true``) and
concurrency (c1, c32), interleaves wrk runs simulator, this, other (the order alternates every repeat, so neither
gateway always runs right after the simulator), ``--repeats`` times, and reports medians and every repeat.

    .venv/bin/python benchmarks/gateway_compare.py --other ../clawback-before --repeats 5 --duration 8

Added latency = gateway p50 - simulator p50 of the same repeat (c1). The machine is shared: read the per-repeat
columns, not only the medians.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import benchlib as bl


def git_head(checkout: Path) -> str:
    out = subprocess.run(["git", "-C", str(checkout), "log", "-1", "--format=%h %s"], capture_output=True, text=True)
    return out.stdout.strip()[:100]


def create_key(clawback: str, env: dict[str, str]) -> str:
    out = subprocess.run([clawback, "keys", "create", "bench"], env=env, capture_output=True, text=True, timeout=60,
                         check=True)  # fmt: skip
    return [x.strip() for x in out.stdout.splitlines() if x.strip()][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--other", type=Path, required=True, help="a checkout with its own .venv")
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="seconds of c32 warm-up per target and mode")
    parser.add_argument("--out", type=Path, default=bl.BENCH_DIR / "gateway-compare.md")
    args = parser.parse_args()
    other = args.other.resolve()
    binaries = {"this": bl.CLAWBACK, "other": str(other / ".venv" / "bin" / "clawback")}
    # Each gateway runs its own checkout's code, also when one's .venv is the other's (a worktree's symlink: the
    # editable install points at one src/).
    sources = {"this": str(bl.ROOT / "src"), "other": str(other / "src")}
    heads = {"this": git_head(bl.ROOT), "other": git_head(other)}
    started, info = bl.now_utc(), bl.machine()
    runs: dict[tuple[str, int, str], list[bl.WrkResult]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="clawback-gwcompare-") as tmp:
        work = Path(tmp)
        script = bl.lua_script(work)
        sim_port = bl.free_port()
        sim = bl.start_server("simulator", [bl.CLAWBACK, "simulate", "--port", str(sim_port)], sim_port,
                              dict(os.environ, PYTHONPATH=sources["this"]), work)  # fmt: skip
        servers, keys = {}, {}
        try:
            for name, clawback in binaries.items():
                home = work / name
                home.mkdir()
                env = dict(os.environ, CLAWBACK_LEDGER__URL=f"sqlite:///{home / 'ledger.db'}",
                           CLAWBACK_LEDGER__JOURNAL_PATH=str(home / "ledger.journal"),
                           PYTHONPATH=sources[name])  # fmt: skip
                keys[name] = create_key(clawback, env)
                port = bl.free_port()
                servers[name] = bl.start_server(f"gateway-{name}", [clawback, "serve", "--port", str(port),
                                                "--upstream", sim.url], port, env, work)  # fmt: skip
            watch = {"simulator": sim.proc.pid, **{n: s.proc.pid for n, s in servers.items()}}
            urls = {"simulator": sim.url, **{n: s.url for n, s in servers.items()}}
            secret = {"simulator": None, **keys}
            for target in urls:
                for mode in ("plain", "stream"):
                    bl.run_wrk("warmup", target, urls[target] + "/v1/messages", mode, 32, args.warmup, script,
                               secret[target])  # fmt: skip
            for rep in range(args.repeats):
                order = ["simulator", "this", "other"] if rep % 2 == 0 else ["simulator", "other", "this"]
                for mode in ("plain", "stream"):
                    for conns in (1, 32):
                        for target in order:
                            label = f"{target} {mode} c{conns} #{rep + 1}"
                            r = bl.run_wrk(label, target, urls[target] + "/v1/messages", mode, conns, args.duration,
                                           script, secret[target], None, watch)  # fmt: skip
                            runs[(mode, conns, target)].append(r)
                            print(f"{label:>24}: {r.rps:7.0f} rps  p50 {r.p50_ms:6.2f}  p99 {r.p99_ms:7.2f} ms  "
                                  f"err {r.errors}  cpu {r.extra['cpu_pct']}", flush=True)  # fmt: skip
        finally:
            for server in servers.values():
                server.stop()
            sim.stop()
    load_after = bl.loadavg()

    rows: list[dict[str, object]] = []
    for (mode, conns, target), results in sorted(runs.items()):
        if target == "simulator":
            continue
        sims = runs[(mode, conns, "simulator")]
        added = [r.p50_ms - s.p50_ms for r, s in zip(results, sims, strict=True)]
        rows.append({
            "mode": mode, "conns": conns, "target": target,
            "rps_median": statistics.median(r.rps for r in results),
            "p50_median": statistics.median(r.p50_ms for r in results),
            "p99_median": statistics.median(r.p99_ms for r in results),
            "added_p50_median": statistics.median(added),
            "added_p50_each": added, "rps_each": [r.rps for r in results],
            "sim_rps_median": statistics.median(s.rps for s in sims),
            "errors": sum(r.errors for r in results),
        })  # fmt: skip
    lines = [
        "# Gateway vs gateway, side by side (`benchmarks/gateway_compare.py`)",
        "",
        f"Started {started}; load average after: {load_after}. Machine: {info.get('cpu_model', '')}, "
        f"nproc {info.get('nproc', '')}, load before {info.get('load_before', '')}.",
        f"Command: `.venv/bin/python benchmarks/gateway_compare.py {' '.join(sys.argv[1:])}`",
        "",
        f"- this: `{heads['this']}`",
        f"- other: `{heads['other']}`",
        "",
        "| mode | conc. | gateway | rps (median) | p50 ms | p99 ms | added p50 ms (median) | added p50 each repeat | "
        "rps each repeat | errors |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        each = ", ".join(f"{v:.2f}" for v in row["added_p50_each"])  # type: ignore[attr-defined]
        rps_each = ", ".join(f"{v:.0f}" for v in row["rps_each"])  # type: ignore[attr-defined]
        lines.append(
            f"| {row['mode']} | c{row['conns']} | {row['target']} | {row['rps_median']:.0f} | {row['p50_median']:.2f} "
            f"| {row['p99_median']:.2f} | {row['added_p50_median']:.2f} | {each} | {rps_each} | {row['errors']} |"
        )
    args.out.write_text("\n".join(lines) + "\n")
    dump = {"date": started, "machine": info, "heads": heads, "rows": rows,
            "runs": bl.as_dicts([r for v in runs.values() for r in v])}  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(dump, indent=2, default=str) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
