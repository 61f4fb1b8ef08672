"""``clawback bench savings``: what each optimization saves on the reference workloads; ``clawback bench budgets``:
budgets under concurrent load across replicas; ``clawback bench dispatch``: throughput and failures of many
concurrent calls through the dispatch stage."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.console import Console

from clawback.bench.savings import render, run_savings, summarize, workload_names
from clawback.cli.options import ConfigOption, settings_or_exit
from clawback.config import Settings

__all__ = ["bench_app", "bench_replicas", "dispatch_command", "savings_command", "wide_console"]


def wide_console() -> Console:
    """stdout; wide enough for the tables when it is a file or a pipe (Rich assumes 80 columns there)."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def savings_command(
    settings: Settings,
    workload: str,
    *,
    json_output: bool,
    seed: int,
    scale: float,
    holdout: bool = True,
    shadow: bool = True,
) -> None:
    """Run the savings benchmark; the tables go to stdout, then (``--json``) one JSON line, last."""
    out = wide_console()
    try:
        names = workload_names(workload)
    except ValueError as exc:
        Console(stderr=True).print(f"[bold red]clawback:[/] {exc}")
        raise typer.Exit(2) from None
    results, elapsed = run_savings(names, seed=seed, scale=scale, base=settings, console=Console(stderr=True),
                                   holdout=holdout, shadow=shadow)  # fmt: skip
    render(results, out)
    report = summarize(results, elapsed, seed=seed, scale=scale)
    out.print(
        f"total: baseline ${report['baseline_cost_usd']:,.4f}, optimized ${report['optimized_cost_usd']:,.4f}, "
        f"reduction {report['cost_reduction']:.1%}; optimizations: {', '.join(report['optimizations']) or 'none yet'}; "
        f"{elapsed:.0f} s",
        highlight=False,
    )
    if not report["consistent"]:
        out.print("[bold red]warning:[/] harness, ledger and simulator billing disagree (see the marked rows)")
    if json_output:
        print(orjson.dumps(report).decode(), flush=True)
    if not report["consistent"]:
        raise typer.Exit(1)


bench_app = typer.Typer(no_args_is_help=True, help="Measure what clawback saves, in dollars and quality.")


@bench_app.command("savings")
def bench_savings(
    workload: Annotated[str, typer.Option(help="A reference workload, or all")] = "all",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line")] = False,
    seed: Annotated[int, typer.Option(help="Workload seed")] = 0,
    scale: Annotated[float, typer.Option(help="Workload size (1.0 = reference size)", min=0.01)] = 1.0,
    holdout: Annotated[
        bool, typer.Option(help="Also replay the full pipeline with a 50/50 holdout, each half in turn")
    ] = True,
    shadow: Annotated[bool, typer.Option(help="Also replay with every optimization in shadow mode")] = True,
    config: ConfigOption = None,
) -> None:
    """Replay workloads through the simulator: baseline, full pipeline, each optimization alone, holdout, shadow."""
    savings_command(settings_or_exit(config), workload, json_output=json_output, seed=seed, scale=scale,
                    holdout=holdout, shadow=shadow)  # fmt: skip


@bench_app.command("budgets")
def bench_budgets(
    replicas: Annotated[int, typer.Option(help="Gateway processes sharing Redis and PostgreSQL", min=1)] = 4,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once", min=1)] = 200,
    requests: Annotated[int, typer.Option(help="Requests in the load phase", min=1)] = 1000,
    budget_usd: Annotated[str, typer.Option("--budget-usd", help="The budget the load runs against")] = "0.60",
    lease_s: Annotated[float, typer.Option("--lease", help="Reservation lease (the crash phase waits on it)")] = 5.0,
    database_url: Annotated[
        str, typer.Option(help="A PostgreSQL maintenance database; the bench creates and drops its own")
    ] = "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    redis_url: Annotated[str, typer.Option(help="The Redis the replicas share (keys under a prefix of the run)")] = (
        "redis://127.0.0.1:6379/0"
    ),
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line")] = False,
) -> None:
    """Budgets under concurrent load across gateway replicas: overshoot, false refusals, counter vs ledger,
    alert latency, override expiry, a crashed replica's reservations."""
    from clawback.bench.budgets import BudgetBenchConfig, run_budget_bench

    out = wide_console()
    err = Console(stderr=True)
    config = BudgetBenchConfig(replicas=replicas, concurrency=concurrency, requests=requests, budget_usd=budget_usd,
                               lease_s=lease_s, database_url=database_url, redis_url=redis_url)  # fmt: skip
    report = run_budget_bench(config, log=lambda line: err.print(line, highlight=False))
    checks = {
        "overshoot_usd == 0": report["overshoot_usd"] == 0,
        "refused_while_budget_left == 0": report["refused_while_budget_left"] == 0,
        "counter_vs_ledger_usd == 0": report["counter_vs_ledger_micro_usd"] == 0,
        "alert_latency_s <= 30": report["alert_latency_s"] is not None and report["alert_latency_s"] <= 30,
        "override expired on time (< 1 s late, nothing let through after)": report["override_expiry_late_s"] is not None
        and report["override_expiry_late_s"] < 1.0
        and report["override_allowed_after_expiry"] == 0,
        "crashed replica released within its lease": report["crash_released_after_s"] is not None
        and report["crash_released_after_s"] <= report["lease_s"] + 0.5,
    }
    out.print(
        f"budget ${report['budget_usd']}: ledger spend ${report['ledger_spend_usd']:.6f}, overshoot "
        f"${report['overshoot_usd']}, {report['refused']} refused ({report['refused_while_budget_left']} while the "
        f"worst case fitted), counter - ledger ${report['counter_vs_ledger_usd']}, alert latency "
        f"{report['alert_latency_s']} s, override {report['override_expiry_late_s']} s late, crashed replica's "
        f"{report['crash_reservations_held']} reservations released after {report['crash_released_after_s']} s "
        f"(lease {report['lease_s']} s); outcomes {report['outcomes']}; {report['load_seconds']} s of load",
        highlight=False,
    )
    for name, ok in checks.items():
        out.print(f"  {'ok  ' if ok else 'FAIL'} {name}", highlight=False)
    report["checks"] = checks
    if json_output:
        print(orjson.dumps(report).decode(), flush=True)
    if not all(checks.values()):
        raise typer.Exit(1)


def dispatch_command(
    *, calls: int, latency_ms: float, concurrency_limit: int, fault_rate: float, seed: int, json_output: bool
) -> None:
    """Run the dispatch benchmark; a summary to stdout, then (``--json``) one JSON line, last."""
    from clawback.bench.dispatch import run_dispatch_bench

    report = run_dispatch_bench(
        calls=calls, latency_ms=latency_ms, concurrency_limit=concurrency_limit, fault_rate=fault_rate, seed=seed
    )
    out = wide_console()
    limit = (report["dispatch"] or {}).get("keys", {})
    learned = ", ".join(str(v["concurrency_limit"]) for v in limit.values()) or "-"
    out.print(
        f"{report['calls']} calls of {latency_ms:g} ms under a {concurrency_limit}-call upstream limit, "
        f"faults {fault_rate:.0%}: wall {report['wall_s']:.2f} s (ideal {report['ideal_s']:.2f} s, "
        f"x{report['wall_over_ideal']}); {report['throughput_ratio']}x sequential (estimated "
        f"{report['sequential_wall_s']:.0f} s); utilisation {report['utilisation']:.1%}; learned limit {learned}",
        highlight=False,
    )
    out.print(
        f"upstream: {report['upstream_attempts']} attempts, {report['upstream_429s']} 429s, "
        f"{report['upstream_5xx']} 5xx, {report['upstream_dropped']} dropped; clients: "
        f"{report['client_failures']} failed, {report['client_429s']} 429s, {report['clients_with_two_answers']} "
        f"with two answers; ledger: {report['ledger_rows']} rows, {report['duplicate_bookings']} duplicate bookings",
        highlight=False,
    )
    if json_output:
        print(orjson.dumps(report).decode(), flush=True)


@bench_app.command("dispatch")
def bench_dispatch(
    calls: Annotated[int, typer.Option(help="Calls sent at once", min=1)] = 500,
    latency_ms: Annotated[float, typer.Option(help="Upstream latency per call", min=0)] = 1000.0,
    concurrency_limit: Annotated[int, typer.Option(help="Calls the upstream takes at once", min=1)] = 50,
    fault_rate: Annotated[
        float, typer.Option(help="Share of attempts failing (500, 529, dropped)", min=0, max=0.9)
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Simulator seed")] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line")] = False,
) -> None:
    """Many concurrent calls through the gateway's dispatch stage against the simulator's limits and faults."""
    dispatch_command(
        calls=calls, latency_ms=latency_ms, concurrency_limit=concurrency_limit, fault_rate=fault_rate, seed=seed,
        json_output=json_output,
    )  # fmt: skip


@bench_app.command("replicas")
def bench_replicas(
    replicas: Annotated[int, typer.Option(help="Gateway processes", min=1)] = 3,
    requests: Annotated[int, typer.Option(help="Requests in all", min=1)] = 3000,
    concurrency: Annotated[int, typer.Option(help="Requests in flight", min=1)] = 24,
    restart_db: Annotated[bool, typer.Option("--restart-db", help="Restart PostgreSQL half-way through")] = False,
    db_down_s: Annotated[float, typer.Option("--db-down-s", help="How long PostgreSQL stays down", min=0)] = 2.0,
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line")] = False,
) -> None:
    """N gateway replicas on a private PostgreSQL under concurrent load: is every billed request in the ledger once?"""
    from clawback.bench.replicas import run_replicas

    err = Console(stderr=True)
    run = run_replicas(
        replicas=replicas, requests=requests, concurrency=concurrency, restart_db=restart_db, db_down_s=db_down_s,
        log=lambda line: err.print(line, highlight=False),
    )  # fmt: skip
    report = run.report()
    out = wide_console()
    out.print(
        f"{report['requests']} requests through {replicas} replicas in {report['load_s']} s "
        f"({report['requests_per_s']}/s), {report['client_ok']} ok; simulator billed {report['simulator_billed']}, "
        f"ledger rows {report['ledger_rows']} (missing {report['ledger_missing']}, duplicates "
        f"{report['ledger_duplicates']}); cost ledger ${report['ledger_cost_usd']} vs simulator "
        f"${report['simulator_cost_usd']}; restart {report['db_restart_s']} s; journaled {report['ledger_journaled']}, "
        f"replayed {report['ledger_replayed']}; pool timeouts {report['pool_timeouts']}",
        highlight=False,
    )
    if json_output:
        print(orjson.dumps(report).decode(), flush=True)
    if not report["ok"]:
        err.print("[bold red]clawback:[/] the ledger does not match the simulator's billing (see above)")
        raise typer.Exit(1)
