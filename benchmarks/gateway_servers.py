"""The same gateway app under different HTTP servers, side by side against one simulator (on demand, not CI).

Issue 19: does another server cut the gateway's CPU per request? One ``clawback simulate`` (uvicorn, unchanged)
and one gateway per variant, each with its own SQLite ledger and key, shipped defaults; wrk interleaved
simulator / variants (the order reversed every other repeat), ``--repeats`` times; CPU us per request from the
process group's ``/proc`` counters (``benchlib.cpu_seconds``: granian's Rust threads and workers included).

Variants: ``uvicorn`` (``clawback serve``, this checkout), ``other`` (``clawback serve`` of ``--other``'s
``src/``), ``granian`` / ``granian-st`` / ``granian-rust`` / ``granian-st-rust`` (granian's ASGI interface,
uvloop, HTTP/1, 1 worker, on ``clawback.gateway.app:worker_app``; ``-st`` its single-threaded runtime, ``-rust``
its Rust task implementation). granian is not a dependency: ``--granian-path`` names a directory it was
installed into (``.venv/bin/pip install --target DIR granian``).

    .venv/bin/python benchmarks/gateway_servers.py --granian-path /tmp/granian --variants uvicorn,granian
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

GRANIAN_FLAGS = {
    "granian": [],
    "granian-st": ["--runtime-mode", "st"],
    "granian-rust": ["--task-impl", "rust"],
    "granian-st-rust": ["--runtime-mode", "st", "--task-impl", "rust"],
}


def create_key(env: dict[str, str]) -> str:
    out = subprocess.run([bl.CLAWBACK, "keys", "create", "bench"], env=env, capture_output=True, text=True,
                         timeout=60, check=True)  # fmt: skip
    return [x.strip() for x in out.stdout.splitlines() if x.strip()][-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", default="uvicorn,granian")
    parser.add_argument("--granian-path", type=Path, help="a directory granian is installed in (pip --target)")
    parser.add_argument("--other", type=Path, help="another checkout, for the 'other' variant")
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conns", default="1,32")
    parser.add_argument("--modes", default="plain,stream")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "gateway-servers.json")
    args = parser.parse_args()
    variants = args.variants.split(",")
    here = str(bl.ROOT / "src")
    started, info = bl.now_utc(), bl.machine()
    runs: dict[tuple[str, int, str], list[bl.WrkResult]] = collections.defaultdict(list)
    with tempfile.TemporaryDirectory(prefix="clawback-servers-") as tmp:
        work = Path(tmp)
        script = bl.lua_script(work)
        sim_port = bl.free_port()
        sim = bl.start_server("simulator", [bl.CLAWBACK, "simulate", "--port", str(sim_port)], sim_port,
                              dict(os.environ, PYTHONPATH=here), work)  # fmt: skip
        servers, keys = {}, {}
        for name in variants:
            home = work / name
            home.mkdir()
            src = str(args.other.resolve() / "src") if name == "other" else here
            path = f"{src}:{args.granian_path}" if args.granian_path else src
            env = dict(os.environ, CLAWBACK_LEDGER__URL=f"sqlite:///{home / 'ledger.db'}", PYTHONPATH=path,
                       CLAWBACK_LEDGER__JOURNAL_PATH=str(home / "ledger.journal"),
                       CLAWBACK_UPSTREAM__URL=sim.url)  # fmt: skip
            keys[name] = create_key(env)
            port = bl.free_port()
            if name in GRANIAN_FLAGS:
                argv = [str(bl.VENV_BIN / "python"), "-m", "granian", "--interface", "asgi", "--loop", "uvloop",
                        "--http", "1", "--no-ws", "--workers", "1", "--host", bl.HOST, "--port", str(port),
                        "--log-level", "warning", "--factory", *GRANIAN_FLAGS[name],
                        "clawback.gateway.app:worker_app"]  # fmt: skip
            else:
                argv = [bl.CLAWBACK, "serve", "--port", str(port), "--upstream", sim.url]
            servers[name] = bl.start_server(name, argv, port, env, work)
        watch = {"simulator": sim.proc.pid, **{n: s.proc.pid for n, s in servers.items()}}
        urls = {"simulator": sim.url, **{n: s.url for n, s in servers.items()}}
        secret = {"simulator": None, **keys}
        modes, conns = args.modes.split(","), [int(c) for c in args.conns.split(",")]
        for target in urls:
            for mode in modes:
                bl.run_wrk("warmup", target, urls[target] + "/v1/messages", mode, 32, 3, script, secret[target])
        for rep in range(args.repeats):
            order = ["simulator", *(variants if rep % 2 == 0 else variants[::-1])]
            for mode in modes:
                for c in conns:
                    for target in order:
                        label = f"{target} {mode} c{c} #{rep + 1}"
                        r = bl.run_wrk(label, target, urls[target] + "/v1/messages", mode, c, args.duration, script,
                                       secret[target], None, watch)  # fmt: skip
                        cpu = r.extra["cpu_pct"][target]  # type: ignore[index]
                        r.extra["cpu_us_per_req"] = round(cpu / 100 * 1e6 / r.rps) if r.rps else None
                        runs[(mode, c, target)].append(r)
                        print(f"{label:>28}: {r.rps:7.0f} rps  p50 {r.p50_ms:6.2f} ms  err {r.errors}  cpu {cpu} % "
                              f"-> {r.extra['cpu_us_per_req']} us/req", flush=True)  # fmt: skip
        for server in servers.values():
            server.stop()
        sim.stop()
    rows = []
    for (mode, c, target), results in sorted(runs.items()):
        sims = runs[(mode, c, "simulator")]
        rows.append({
            "mode": mode, "conns": c, "target": target,
            "rps_median": round(statistics.median(r.rps for r in results)),
            "ratio_median": round(statistics.median(r.rps / s.rps for r, s in zip(results, sims, strict=True)), 3),
            "added_p50_ms_median": round(statistics.median(r.p50_ms - s.p50_ms for r, s in
                                                           zip(results, sims, strict=True)), 3),
            "cpu_us_per_req_median": statistics.median(r.extra["cpu_us_per_req"] or 0 for r in results),
            "cpu_us_per_req_each": [r.extra["cpu_us_per_req"] for r in results],
            "errors": sum(r.errors for r in results),
        })  # fmt: skip
    for row in rows:
        print(json.dumps(row))
    dump = {"date": started, "load_after": bl.loadavg(), "machine": info, "command": sys.argv, "rows": rows,
            "runs": bl.as_dicts([r for v in runs.values() for r in v])}  # fmt: skip
    args.out.write_text(json.dumps(dump, indent=2, default=str) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
