"""``gateway_bench.py --defaults``: what each pipeline configuration adds over the simulator, side by side in one run.

One simulator and three gateways in front of it (``clawback serve``, ledger on in SQLite, one key each):

* ``pass-through``: every optional stage off (exact cache, prompt-cache planner, coalesce, dispatch, budgets);
* ``defaults``: the settings a new user gets;
* ``all stages``: the defaults plus the semantic cache and pruning.

wrk runs are interleaved sim, pass-through, defaults, all stages per cell (c1 = -t1 -c1, then c32 = -t2 -c32),
``--repeats`` times, so that a shared machine's load falls on all four alike. Reported per configuration: the p50
and p99 it adds over the simulator at c1 and its c32 throughput as a share of the simulator's (issue 19's targets:
defaults <= 1 ms added p50, >= 0.5x), medians over repeats. Plain requests by default; ``--stream`` adds streams.
With the defaults (5 s cells, 3 repeats, plain) it takes about 2.5 minutes.
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

_OFF = {"CLAWBACK_EXACT_CACHE__ENABLED": "false", "CLAWBACK_PROMPT_CACHE__ENABLED": "false",
        "CLAWBACK_COALESCE__ENABLED": "false", "CLAWBACK_DISPATCH__ENABLED": "false",
        "CLAWBACK_BUDGETS__ENFORCE": "false", "CLAWBACK_SEMANTIC_CACHE__ENABLED": "false",
        "CLAWBACK_PRUNING__ENABLED": "false"}  # fmt: skip
CONFIGS: dict[str, dict[str, str]] = {
    "pass-through": _OFF,
    "defaults": {},
    "all stages": {"CLAWBACK_SEMANTIC_CACHE__ENABLED": "true", "CLAWBACK_PRUNING__ENABLED": "true"},
}
TARGETS = {"added_p50_ms_max": 1.0, "c32_ratio_min": 0.5}  # for "defaults"


def _key(env: dict[str, str]) -> str:
    out = subprocess.run([bl.CLAWBACK, "keys", "create", "bench"], env=env, capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    return [x.strip() for x in out.stdout.splitlines() if x.strip()][-1]


def run(args: argparse.Namespace) -> None:
    modes = ("plain", "stream") if args.stream else ("plain",)
    configs = dict(CONFIGS)
    if args.workers > 1:  # issue 19 (d): the defaults served by N processes (not the shipped default)
        configs[f"defaults, {args.workers} workers"] = {"CLAWBACK_GATEWAY__WORKERS": str(args.workers)}
    load_before, started = bl.loadavg(), bl.now_utc()
    runs: dict[tuple[str, int, str], list[bl.WrkResult]] = {}
    with tempfile.TemporaryDirectory(prefix="clawback-defaults-") as tmp:
        work = Path(tmp)
        # This checkout's code, also when its .venv is another checkout's (a worktree's symlink: the editable
        # install points at that checkout's src/).
        own = {**os.environ, "PYTHONPATH": str(bl.ROOT / "src")}
        envs = {name: {**own, **extra, "CLAWBACK_LEDGER__URL": f"sqlite:///{work / str(i)}.db",
                       "CLAWBACK_LEDGER__JOURNAL_PATH": str(work / f"{i}.journal")}
                for i, (name, extra) in enumerate(configs.items())}  # fmt: skip
        keys = {name: _key(env) for name, env in envs.items()}
        script = bl.lua_script(work)
        sim_port = bl.free_port()
        sim = bl.start_server("simulator", [bl.CLAWBACK, "simulate", "--port", str(sim_port)], sim_port, own,
                              work)  # fmt: skip
        servers: dict[str, tuple[bl.Server, str | None]] = {"simulator": (sim, None)}
        for i, (name, env) in enumerate(envs.items()):
            port = bl.free_port()
            argv = [bl.CLAWBACK, "serve", "--port", str(port), "--upstream", sim.url]
            servers[name] = (bl.start_server(f"gateway-{i}", argv, port, env, work), keys[name])
        watch = {name: server.proc.pid for name, (server, _) in servers.items()}
        try:
            for name, (server, key) in servers.items():
                for mode in modes:
                    bl.run_wrk("warmup", name, server.url + "/v1/messages", mode, 32, args.warmup, script, key)
            for rep in range(args.repeats):
                for mode in modes:
                    for conns in (1, 32):
                        for name, (server, key) in servers.items():
                            r = bl.run_wrk(f"{name} {mode} c{conns} #{rep + 1}", name, server.url + "/v1/messages",
                                           mode, conns, args.duration, script, key, None, watch)  # fmt: skip
                            runs.setdefault((mode, conns, name), []).append(r)
                            print(f"{r.label:>28}: {r.rps:7.0f} rps  p50 {r.p50_ms:6.2f}  p99 {r.p99_ms:6.2f} ms  "
                                  f"err {r.errors}  cpu {r.extra['cpu_pct']}", flush=True)  # fmt: skip
        finally:
            for server, _ in servers.values():
                server.stop()
    load_after = bl.loadavg()
    summary: dict[str, dict[str, object]] = {}
    lines = [f"Date {started}; load average before / after: {load_before} / {load_after}; code `{bl.machine()['git']}`",
             f"`.venv/bin/python benchmarks/gateway_bench.py --defaults --duration {args.duration} "
             f"--repeats {args.repeats}{' --stream' if args.stream else ''}"
             f"{f' --workers {args.workers}' if args.workers > 1 else ''}`", "",
             "| mode | configuration | added p50 c1 | added p99 c1 | c32 rps | c32 / simulator | CPU µs/req c32 |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode in modes:
        sim1, sim32 = runs[(mode, 1, "simulator")], runs[(mode, 32, "simulator")]
        s50 = statistics.median(r.p50_ms for r in sim1)
        s99 = statistics.median(r.p99_ms for r in sim1)
        s_rps = statistics.median(r.rps for r in sim32)
        lines.append(f"| {mode} | simulator alone | p50 {s50:.2f} ms | p99 {s99:.2f} ms | {s_rps:.0f} | 1 | - |")
        for name in configs:
            c1, c32 = runs[(mode, 1, name)], runs[(mode, 32, name)]
            added50 = statistics.median(r.p50_ms for r in c1) - s50
            added99 = statistics.median(r.p99_ms for r in c1) - s99
            rps = statistics.median(r.rps for r in c32)
            ratio = rps / s_rps if s_rps else 0.0
            us = statistics.median(r.extra["cpu_pct"][name] * 1e4 / r.rps for r in c32 if r.rps)  # type: ignore[index]
            summary[f"{mode} {name}"] = {"added_p50_ms": added50, "added_p99_ms": added99, "c32_rps": rps,
                                         "c32_ratio": ratio, "cpu_us_per_req_c32": us}  # fmt: skip
            verdict = ""
            if name == "defaults":
                ok = added50 <= TARGETS["added_p50_ms_max"] and ratio >= TARGETS["c32_ratio_min"]
                verdict = " **PASS**" if ok else " **FAIL**"
            lines.append(f"| {mode} | {name}{verdict} | {added50:+.2f} ms | {added99:+.2f} ms | {rps:.0f} "
                         f"| {ratio:.2f} | {us:.0f} |")  # fmt: skip
    print("\n".join(lines))
    out = args.out or bl.BENCH_DIR / "gateway-defaults.md"
    title = "# Gateway configurations side by side (`gateway_bench.py --defaults`)\n\n"
    out.write_text(title + "\n".join(lines) + "\n")
    every = {f"{k[0]} c{k[1]} {k[2]}": bl.as_dicts(v) for k, v in runs.items()}
    dump = {"date": started, "load_before": load_before, "load_after": load_after, "targets": TARGETS,
            "summary": summary, "runs": every}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(dump, indent=2, default=str) + "\n")
    print(f"wrote {out}")
