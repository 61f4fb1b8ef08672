"""What the dispatch and coalescing stages cost on the pass-through path (on demand, not CI), side by side.

One simulator, two gateways in front of it (``clawback serve``: A with dispatch and coalesce on, the defaults; B with
both off; ledger on, one key each), and wrk runs interleaved sim, A, B per cell, ``--repeats`` times, so that the
load of a shared machine falls on all three alike. Reports the median p50 and rps per cell, the p50 each gateway
adds over the simulator at c1 (issue 4's target: <= 1 ms), the gateway CPU per request, and A - B.

    .venv/bin/python benchmarks/dispatch_overhead.py --duration 8 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

import benchlib as bl

OFF = {"CLAWBACK_DISPATCH__ENABLED": "false", "CLAWBACK_COALESCE__ENABLED": "false"}


def key_for(env: dict[str, str]) -> str:
    out = subprocess.run([bl.CLAWBACK, "keys", "create", "bench"], env=env, capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    return [x.strip() for x in out.stdout.splitlines() if x.strip()][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="JSON of every run")
    args = parser.parse_args()
    load_before = bl.loadavg()
    with tempfile.TemporaryDirectory(prefix="clawback-dispatch-overhead-") as tmp:
        work = Path(tmp)
        envs: dict[str, dict[str, str]] = {}
        for name, extra in (("on", {}), ("off", OFF)):
            envs[name] = {**os.environ, **extra, "CLAWBACK_LEDGER__URL": f"sqlite:///{work / name}.db",
                          "CLAWBACK_LEDGER__JOURNAL_PATH": str(work / f"{name}.journal")}  # fmt: skip
        keys = {name: key_for(env) for name, env in envs.items()}
        script = bl.lua_script(work)
        sim_port = bl.free_port()
        sim = bl.start_server("simulator", [bl.CLAWBACK, "simulate", "--port", str(sim_port)], sim_port,
                              dict(os.environ), work)  # fmt: skip
        gateways = {}
        for name, env in envs.items():
            port = bl.free_port()
            gateways[name] = bl.start_server(f"gateway-{name}", [bl.CLAWBACK, "serve", "--port", str(port),
                                                                 "--upstream", sim.url], port, env, work)  # fmt: skip
        targets = {"simulator": (sim, None), "dispatch on": (gateways["on"], keys["on"]),
                   "dispatch off": (gateways["off"], keys["off"])}  # fmt: skip
        watch = {"simulator": sim.proc.pid, **{f"gateway-{n}": g.proc.pid for n, g in gateways.items()}}
        runs: dict[tuple[str, int, str], list[bl.WrkResult]] = {}
        try:
            for name, (server, key) in targets.items():
                for mode in ("plain", "stream"):
                    bl.run_wrk("warmup", name, server.url + "/v1/messages", mode, 32, 2, script, key)
            for rep in range(args.repeats):
                for mode in ("plain", "stream"):
                    for conns in (1, 32):
                        for name, (server, key) in targets.items():
                            r = bl.run_wrk(f"{name} {mode} c{conns} #{rep + 1}", name, server.url + "/v1/messages",
                                           mode, conns, args.duration, script, key, None, watch)  # fmt: skip
                            runs.setdefault((mode, conns, name), []).append(r)
                            print(f"{r.label:>30}: {r.rps:7.0f} rps  p50 {r.p50_ms:6.2f} ms  err {r.errors}  "
                                  f"cpu {r.extra['cpu_pct']}", flush=True)  # fmt: skip
        finally:
            for server in gateways.values():
                server.stop()
            sim.stop()
    print(f"\nload average before / after: {load_before} / {bl.loadavg()}")
    print("| mode | conc. | target | rps | p50 ms | added p50 vs sim | gateway CPU µs/req |")
    print("|---|---|---|---|---|---|---|")
    summary: dict[str, object] = {}
    for mode in ("plain", "stream"):
        for conns in (1, 32):
            sim_p50 = statistics.median(r.p50_ms for r in runs[(mode, conns, "simulator")])
            for name in targets:
                rs = runs[(mode, conns, name)]
                rps, p50 = statistics.median(r.rps for r in rs), statistics.median(r.p50_ms for r in rs)
                cpu_key = {"dispatch on": "gateway-on", "dispatch off": "gateway-off"}.get(name)
                us = (statistics.median(r.extra["cpu_pct"][cpu_key] * 1e4 / r.rps for r in rs if r.rps)  # type: ignore[index]
                      if cpu_key else None)  # fmt: skip
                added = p50 - sim_p50 if name != "simulator" else None
                summary[f"{mode} c{conns} {name}"] = {"rps": rps, "p50_ms": p50, "added_p50_ms": added, "cpu_us": us}
                added_s = "-" if added is None else f"{added:+.2f} ms"
                us_s = "-" if us is None else f"{us:.0f}"
                print(f"| {mode} | c{conns} | {name} | {rps:.0f} | {p50:.2f} | {added_s} | {us_s} |")
    for mode in ("plain", "stream"):
        on, off = summary[f"{mode} c1 dispatch on"], summary[f"{mode} c1 dispatch off"]
        print(
            f"{mode} c1: dispatch on adds {on['p50_ms'] - off['p50_ms']:+.2f} ms p50 over dispatch off "  # type: ignore[index]
            f"({on['added_p50_ms']:+.2f} vs {off['added_p50_ms']:+.2f} ms over the simulator)"
        )  # type: ignore[index]
    if args.out:
        args.out.write_text(json.dumps({"summary": summary, "runs": {f"{k[0]} c{k[1]} {k[2]}": bl.as_dicts(v)
                                                                     for k, v in runs.items()}}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
