"""``clawback bench savings``: what each optimization saves on the reference workloads."""

from __future__ import annotations

from typing import Annotated

import orjson
import typer
from rich.console import Console

from clawback.bench.savings import render, run_savings, summarize, workload_names
from clawback.cli.options import ConfigOption, settings_or_exit
from clawback.config import Settings

__all__ = ["bench_app", "savings_command", "wide_console"]


def wide_console() -> Console:
    """stdout; wide enough for the tables when it is a file or a pipe (Rich assumes 80 columns there)."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


def savings_command(settings: Settings, workload: str, *, json_output: bool, seed: int, scale: float) -> None:
    """Run the savings benchmark; the tables go to stdout, then (``--json``) one JSON line, last."""
    out = wide_console()
    try:
        names = workload_names(workload)
    except ValueError as exc:
        Console(stderr=True).print(f"[bold red]clawback:[/] {exc}")
        raise typer.Exit(2) from None
    results, elapsed = run_savings(names, seed=seed, scale=scale, base=settings, console=Console(stderr=True))
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
    config: ConfigOption = None,
) -> None:
    """Replay workloads through the simulator: baseline, full pipeline, each optimization alone."""
    savings_command(settings_or_exit(config), workload, json_output=json_output, seed=seed, scale=scale)
