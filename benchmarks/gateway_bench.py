"""Gateway overhead benchmark (on demand, not CI): simulator alone vs gateway -> simulator, side by side.

Starts ``clawback simulate`` and ``clawback serve --upstream <simulator>`` (ledger on: SQLite in a temp dir, a key
made with ``clawback keys create``), each one uvicorn process in its own process group on 127.0.0.1. Then, for
plain and ``"stream": true`` requests (``benchmarks/messages.lua``), interleaves wrk runs
sim c1, gw c1, sim c32, gw c32 (c1 = -t1 -c1, c32 = -t2 -c32), ``--repeats`` times, and reports the median.

After every gateway run it waits for the ledger to drain and checks that the rows added to the ``ledger`` table
match wrk's request count (wrk does not count the requests in flight when it stops: up to -c more rows).

    .venv/bin/python benchmarks/gateway_bench.py                       # 10 s cells, 2 repeats, ~3.5 min
    .venv/bin/python benchmarks/gateway_bench.py --profile             # + py-spy on the gateway at c32
    .venv/bin/python benchmarks/gateway_bench.py --pin split --repeats 1   # gateway on CPU 0; sim + wrk on CPU 1
    .venv/bin/python benchmarks/gateway_bench.py --defaults   # pass-through / defaults / all stages, ~2.5 min
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl

TARGETS = {
    "added_p50_ms_max": 1.0,  # gateway p50 - simulator p50 at c1
    "c32_ratio_min": 0.50,  # gateway rps / simulator rps at c32
    "c32_rps_min": 1500.0,  # gateway rps at c32
}


def create_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [bl.CLAWBACK, "keys", "create", "bench"], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    lines = [x.strip() for x in out.stdout.splitlines() if x.strip()]
    return lines[-1]


def ledger_count(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("SELECT count(*) FROM ledger").fetchone()[0])
    finally:
        con.close()


def ledger_settled(gw_url: str, db: Path, timeout: float = 15.0) -> int:
    """Wait until the gateway's ledger queue is empty and the row count is stable; return the count."""
    deadline = time.monotonic() + timeout
    last = -1
    while time.monotonic() < deadline:
        time.sleep(0.4)
        health = bl.http_get_json(gw_url + "/healthz")
        depth = health.get("ledger", {}).get("queue_depth", 0)  # type: ignore[union-attr]
        count = ledger_count(db)
        if depth == 0 and count == last:
            return count
        last = count
    return ledger_count(db)


# -- py-spy ---------------------------------------------------------------------------------------------------

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]+)(?::\d+)?\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    return f"{m['func']} ({m['file']})" if m else frame.strip()


def analyse_profile(raw: Path, top: int = 20) -> dict[str, object]:
    """Own time (leaf frame) and inclusive time per function from py-spy's --format raw --threads output."""
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    main_total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        thread = frames[0].split(": ", 1)[-1]
        threads[thread] += count
        if thread != "MainThread":
            continue
        main_total += count
        names = [_short(f) for f in frames[1:]]
        if names:
            own[names[-1]] += count
        for name in set(names):
            incl[name] += count

    def pct(c: int) -> float:
        return round(100 * c / main_total, 1) if main_total else 0.0

    clawback_incl = [(k, pct(v)) for k, v in incl.most_common() if "clawback/" in k][:top]
    return {
        "samples_by_thread": dict(threads),
        "main_samples": main_total,
        "own_top": [(k, pct(v)) for k, v in own.most_common(top)],
        "clawback_inclusive_top": clawback_incl,
        "inclusive_top": [(k, pct(v)) for k, v in incl.most_common(top * 2)],
    }


def profile_gateway(
    gw: bl.Server, mode: str, duration: int, script: Path, key: str, out_dir: Path, wrk_cpus: str | None
) -> dict[str, object] | None:
    pyspy = shutil.which("py-spy") or str(bl.VENV_BIN / "py-spy")
    if not Path(pyspy).exists():
        print("py-spy not found (.venv/bin/pip install py-spy): skipping the profile")
        return None
    argv = bl.wrk_command(gw.url + "/v1/messages", 32, duration + 3, script, wrk_cpus)
    env = dict(os.environ, STREAM="1" if mode == "stream" else "0", API_KEY=key)
    wrk = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    raw = out_dir / f"gateway-pyspy-{mode}.txt"
    try:
        time.sleep(1.5)
        spy = [pyspy, "record", "-p", str(gw.proc.pid), "-d", str(duration), "-r", "100", "--nonblocking",
               "--threads", "--format", "raw", "-o", str(raw)]  # fmt: skip
        subprocess.run(spy, capture_output=True, timeout=duration + 60, check=True)
    finally:
        wrk.wait(timeout=duration + 60)
    result = analyse_profile(raw)
    result["command"] = " ".join(spy).replace(str(bl.VENV_BIN) + "/", ".venv/bin/").replace(str(out_dir), "OUT")
    result["raw_file"] = raw.name
    return result


# -- report ---------------------------------------------------------------------------------------------------


def pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def report(args: argparse.Namespace, info: dict[str, str], started: str, load_after: str, res: dict) -> str:  # type: ignore[type-arg]
    med: dict[tuple[str, str, int], bl.WrkResult] = res["median"]
    up = "simulator" if args.upstream == "simulator" else "canned upstream"
    display = {"simulator": f"{up} alone", "gateway": f"gateway → {up}"}
    rows = [
        "| mode | conc. | target | rps | p50 ms | p90 ms | p99 ms | non-2xx | socket err | CPU % gw / upstream / wrk "
        "| gw CPU µs/req | rps per repeat |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for mode in ("plain", "stream"):
        for conns in (1, 32):
            for target in ("simulator", "gateway"):
                r = med[(mode, target, conns)]
                cpu = r.extra.get("cpu_pct", {})
                cpu_s = f"{cpu.get('gateway', '-') if target == 'gateway' else '-'} / {cpu.get('simulator', '-')}"  # type: ignore[union-attr]
                each = ", ".join(f"{x:.0f}" for x in r.extra.get("rps_each", [r.rps]))  # type: ignore[union-attr]
                gw_us = "-"
                if target == "gateway" and r.rps:
                    gw_us = f"{cpu.get('gateway', 0) * 1e4 / r.rps:.0f}"  # type: ignore[union-attr]
                rows.append(
                    f"| {mode} | c{conns} | {display[target]} | {r.rps:.0f} | {bl.fmt_ms(r.p50_ms)} "
                    f"| {bl.fmt_ms(r.p90_ms)} "
                    f"| {bl.fmt_ms(r.p99_ms)} | {r.non_2xx} | {r.socket_errors} | {cpu_s} / {cpu.get('wrk', '-')} "  # type: ignore[union-attr]
                    f"| {gw_us} | {each} |"
                )
    checks = [
        "| target | plain | stream |",
        "|---|---|---|",
    ]
    derived = res["derived"]
    added = [derived[m]["added_p50_ms"] for m in ("plain", "stream")]
    ratio = [derived[m]["c32_ratio"] for m in ("plain", "stream")]
    rps = [derived[m]["c32_gw_rps"] for m in ("plain", "stream")]
    checks.append(
        "| p50 added at c1 ≤ 1 ms | "
        + " | ".join(f"{a:.2f} ms {verdict(a <= TARGETS['added_p50_ms_max'])}" for a in added)
        + " |"
    )
    checks.append(
        "| c32 gateway rps ≥ 50 % of simulator | "
        + " | ".join(f"{x * 100:.0f} % {verdict(x >= TARGETS['c32_ratio_min'])}" for x in ratio)
        + " |"
    )
    checks.append(
        "| c32 gateway rps ≥ 1,500 | "
        + " | ".join(f"{x:.0f} {verdict(x >= TARGETS['c32_rps_min'])}" for x in rps)
        + " |"
    )
    ledger_rows = [
        "| run | wrk requests | ledger rows added | difference | allowed (≤ c) | ok |",
        "|---|---|---|---|---|---|",
    ]
    for c in res["ledger_checks"]:
        ledger_rows.append(
            f"| {c['label']} | {c['wrk_requests']} | {c['ledger_rows']} | {c['diff']} | {c['allowed']} "
            f"| {'yes' if c['ok'] else '**NO**'} |"
        )
    all_ok = all(c["ok"] for c in res["ledger_checks"])
    total_wrk = sum(c["wrk_requests"] for c in res["ledger_checks"])
    total_rows = sum(c["ledger_rows"] for c in res["ledger_checks"])
    commands = sorted({r.command for r in res["all"]})
    port_re = re.compile(r":\d+/v1")
    commands = sorted({port_re.sub(":PORT/v1", c.replace(str(res["script"]), "benchmarks/messages.lua"))
                       for c in commands})  # fmt: skip
    pin = {
        "none": "none (the scheduler places everything)",
        "split": "`taskset -c 0` gateway; `taskset -c 1` simulator and wrk",
    }[args.pin]
    upstream_desc = (
        "`clawback simulate` (uvicorn)"
        if args.upstream == "simulator"
        else "a canned upstream (`benchmarks/stack/upstream.py` under granian, 1 worker)"
    )
    prof_md = ""
    for mode, prof in res.get("profiles", {}).items():
        if not prof:
            continue
        own = "\n".join(f"| {i + 1} | `{k}` | {v} |" for i, (k, v) in enumerate(prof["own_top"]))
        inc = "\n".join(f"| `{k}` | {v} |" for k, v in prof["clawback_inclusive_top"])
        prof_md += f"""
### py-spy: gateway under c32 {mode} load

`{prof["command"]}` while wrk -t2 -c32 ran. Samples by thread: {prof["samples_by_thread"]}
(100 Hz; py-spy leaves out samples where the thread is idle in a syscall, so MainThread samples / (rate x
duration) is roughly the event loop's busy share). Percentages are of MainThread (event loop) samples.
Time spent in C code without a Python frame of its own (uvloop, httptools, sockets) is charged to the nearest
Python frame, e.g. `run (asyncio/runners.py)` = inside uvloop's C loop.

| # | own time (leaf frame) | % |
|---|---|---|
{own}

| clawback function (inclusive) | % |
|---|---|
{inc}
"""
    return f"""# Gateway benchmark: {up} alone vs gateway -> {up}

Date: {started}. Code: `{info["git"]}` (the servers load src/ when they start).
Machine: nproc {info["nproc"]}, CPU `{info["cpu_model"]}`, {info["memory"]} RAM, kernel
{info["kernel"]}, Python {info["python"]}, {info["wrk"]}. Load average before / after: {info["load_before"]} /
{load_after} (shared, noisy machine: read differences under ~15 % as noise).

Setup: {upstream_desc} and `clawback serve --upstream <it>` (ledger on, SQLite in a temp dir, one key),
one process each. Pinning: {pin}. {args.duration} s per cell, interleaved sim c1, gw c1, sim c32, gw c32 per
mode, {args.repeats} repeat(s); the table shows the median over repeats (errors summed). CPU % = CPU time of the
process during the run / wall time (100 = one core; 2 cores in total).

{chr(10).join(rows)}

## Against the targets

{chr(10).join(checks)}

"p50 added" = median gateway p50 - median simulator p50 at c1; ratio = median gateway rps / median simulator rps
at c32.

## Ledger check

Rows added to the `ledger` table during each gateway run (after the writer drained) vs wrk's request count. wrk
stops counting when its timer ends, while the requests then in flight still reach the gateway and get recorded,
so up to -c extra rows are expected. Total: {total_wrk} wrk requests, {total_rows} ledger rows —
{"**PASS**" if all_ok else "**FAIL**"}.

{chr(10).join(ledger_rows)}
{prof_md}
## Commands

```sh
.venv/bin/python benchmarks/gateway_bench.py {" ".join(res["argv"])}
.venv/bin/clawback keys create bench      # CLAWBACK_LEDGER__URL=sqlite:///TMP/ledger.db, JOURNAL_PATH alike
.venv/bin/clawback simulate --port SIM
.venv/bin/clawback serve --port GW --upstream http://127.0.0.1:SIM
{chr(10).join(commands)}
```
(simulator runs use the simulator's port, gateway runs the gateway's port and `API_KEY` = the created key.)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--repeats", type=int, default=2, help="repeats of each interleaved pair (default 2)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of c32 warm-up per target and mode")
    parser.add_argument("--pin", choices=["none", "split"], default="none",
                        help="split: taskset -c 0 gateway, -c 1 simulator + wrk")  # fmt: skip
    parser.add_argument(
        "--upstream",
        choices=["simulator", "canned"],
        default="simulator",
        help="canned: benchmarks/stack/upstream.py under granian (near-free upstream: the gateway's own limit)",
    )
    parser.add_argument("--profile", action="store_true", help="py-spy record the gateway under c32 load")
    parser.add_argument("--profile-duration", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="default benchmarks/gateway[-pinned].md")
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="pass-through, shipped defaults and every stage on, side by side (gateway_defaults.py)",
    )
    parser.add_argument("--stream", action="store_true", help="with --defaults: streams too (plain only otherwise)")
    parser.add_argument("--workers", type=int, default=1,
                        help="with --defaults: also the defaults served by N worker processes")  # fmt: skip
    args = parser.parse_args()
    if args.defaults:
        import gateway_defaults

        if "--duration" not in sys.argv:
            args.duration = 5
        if "--repeats" not in sys.argv:
            args.repeats = 3
        gateway_defaults.run(args)
        return
    suffix = ("" if args.pin == "none" else "-pinned") + ("" if args.upstream == "simulator" else "-canned")
    out = args.out or bl.BENCH_DIR / f"gateway{suffix}.md"
    gw_cpus, sim_cpus, wrk_cpus = ("0", "1", "1") if args.pin == "split" else (None, None, None)

    info = bl.machine()
    started = bl.now_utc()
    res: dict[str, object] = {"argv": sys.argv[1:]}
    with tempfile.TemporaryDirectory(prefix="clawback-gwbench-") as tmp:
        work = Path(tmp)
        db = work / "ledger.db"
        env = dict(os.environ)
        env["CLAWBACK_LEDGER__URL"] = f"sqlite:///{db}"
        env["CLAWBACK_LEDGER__JOURNAL_PATH"] = str(work / "ledger.journal")
        key = create_key(env)
        script = bl.lua_script(work)
        res["script"] = str(script)
        sim_port, gw_port = bl.free_port(), bl.free_port()
        sim_argv = [bl.CLAWBACK, "simulate", "--port", str(sim_port)]
        if args.upstream == "canned":
            sim_argv = [str(bl.VENV_BIN / "granian"), "--interface", "asgi", "--loop", "uvloop", "--http", "1",
                        "--no-ws", "--workers", "1", "--host", bl.HOST, "--port", str(sim_port), "--log-level",
                        "warning", "--working-dir", str(bl.BENCH_DIR / "stack"), "upstream:app"]  # fmt: skip
        sim = bl.start_server("simulator", sim_argv, sim_port, env, work, sim_cpus)
        gw_argv = [bl.CLAWBACK, "serve", "--port", str(gw_port), "--upstream", sim.url]
        gw = bl.start_server("gateway", gw_argv, gw_port, env, work, gw_cpus)
        watch = {"simulator": sim.proc.pid, "gateway": gw.proc.pid}
        urls = {"simulator": sim.url + "/v1/messages", "gateway": gw.url + "/v1/messages"}
        keys = {"simulator": None, "gateway": key}
        runs: dict[tuple[str, str, int], list[bl.WrkResult]] = collections.defaultdict(list)
        ledger_checks: list[dict[str, object]] = []
        try:
            for target in ("simulator", "gateway"):
                for mode in ("plain", "stream"):
                    bl.run_wrk("warmup", target, urls[target], mode, 32, args.warmup, script, keys[target], wrk_cpus)
            for rep in range(args.repeats):
                for mode in ("plain", "stream"):
                    for conns in (1, 32):
                        for target in ("simulator", "gateway"):
                            before = ledger_settled(gw.url, db) if target == "gateway" else 0
                            label = f"{target} {mode} c{conns} #{rep + 1}"
                            r = bl.run_wrk(label, target, urls[target], mode, conns, args.duration, script,
                                           keys[target], wrk_cpus, watch)  # fmt: skip
                            runs[(mode, target, conns)].append(r)
                            extra = ""
                            if target == "gateway":
                                added = ledger_settled(gw.url, db) - before
                                diff = added - r.requests
                                ok = 0 <= diff <= conns
                                ledger_checks.append({"label": label, "wrk_requests": r.requests,
                                                      "ledger_rows": added, "diff": diff, "allowed": conns,
                                                      "ok": ok})  # fmt: skip
                                extra = f"  ledger +{added} (diff {diff}{'' if ok else ' !!'})"
                            print(f"{label:>26}: {r.rps:7.0f} rps  p50 {r.p50_ms:7.2f}  p99 {r.p99_ms:7.2f} ms  "
                                  f"err {r.errors}  cpu {r.extra['cpu_pct']}{extra}", flush=True)  # fmt: skip
            profiles: dict[str, object] = {}
            if args.profile:
                for mode in ("plain", "stream"):
                    profiles[mode] = profile_gateway(gw, mode, args.profile_duration, script, key, bl.BENCH_DIR,
                                                     wrk_cpus)  # fmt: skip
                    print(f"profile {mode}: {profiles[mode]}", flush=True)
            res["profiles"] = profiles
        finally:
            gw.stop()
            sim.stop()
    load_after = bl.loadavg()

    median = {k: bl.median_result(v) for k, v in runs.items()}
    derived: dict[str, dict[str, float]] = {}
    for mode in ("plain", "stream"):
        s1, g1 = median[(mode, "simulator", 1)], median[(mode, "gateway", 1)]
        s32, g32 = median[(mode, "simulator", 32)], median[(mode, "gateway", 32)]
        sim1, gw1 = runs[(mode, "simulator", 1)], runs[(mode, "gateway", 1)]
        sim32, gw32 = runs[(mode, "simulator", 32)], runs[(mode, "gateway", 32)]
        derived[mode] = {
            "added_p50_ms": g1.p50_ms - s1.p50_ms,
            "added_p50_ms_each": [g.p50_ms - s.p50_ms for g, s in zip(gw1, sim1, strict=True)],
            "c32_ratio": g32.rps / s32.rps if s32.rps else 0.0,
            "c32_gw_rps": g32.rps,
            "c32_ratio_each": [g.rps / s.rps for g, s in zip(gw32, sim32, strict=True)],
        }
    res.update(median=median, derived=derived, ledger_checks=ledger_checks,
               all=[r for v in runs.values() for r in v])  # fmt: skip
    md = report(args, info, started, load_after, res)
    out.write_text(md)
    dump = {
        "date": started, "machine": info, "pin": args.pin, "targets": TARGETS, "derived": derived,
        "ledger_checks": ledger_checks, "runs": bl.as_dicts(res["all"]),  # type: ignore[arg-type]
        "profiles": res.get("profiles", {}),
    }  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(dump, indent=2, default=str) + "\n")
    for mode in ("plain", "stream"):
        d = derived[mode]
        added, ratio, rps = d["added_p50_ms"], d["c32_ratio"], d["c32_gw_rps"]
        print(
            f"{mode}: added p50 c1 {added:.2f} ms {pf(added <= TARGETS['added_p50_ms_max'])}; "
            f"c32 ratio {ratio * 100:.0f} % {pf(ratio >= TARGETS['c32_ratio_min'])}; "
            f"c32 rps {rps:.0f} {pf(rps >= TARGETS['c32_rps_min'])}"
        )
    print(f"ledger check: {'PASS' if all(c['ok'] for c in ledger_checks) else 'FAIL'}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
