"""The ``clawback bench`` commands' bodies (imported lazily by ``clawback.cli``)."""

from __future__ import annotations

import orjson
import typer
from rich.console import Console

from clawback.bench.savings import render, run_savings, summarize, workload_names
from clawback.config import Settings

__all__ = ["savings_command", "wide_console"]


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
