"""``clawback demo``: the README's first command. No key, no network.

It starts the simulator and the gateway in this process, replays a real-estate lead assistant's traffic
(lead chats, a lead-scoring job, property matching, FAQ) twice (once straight to the simulator as the
client wrote it, once through the gateway with every optimization on), then prints what it cost, what it
would have cost and where the difference came from, and leaves the gateway's ledger in a SQLite file.
Both figures are the simulator's own billing, so the comparison is measured, not claimed; the split by
optimization is what each stage recorded in the ledger.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clawback.bench.harness import RunResult, replay
from clawback.bench.savings import optimization_names, with_optimizations
from clawback.config import Settings
from clawback.pricing import load_price_book, usd
from clawback.workloads import real_estate_mix

__all__ = ["demo", "run_demo"]


def _row(label: str, run: RunResult) -> list[str]:
    usage = run.usage
    return [
        label,
        f"${usd(run.simulator_micro_usd):,.4f}",
        f"{usage.input_tokens:,}",
        f"{usage.cache_creation_input_tokens:,}",
        f"{usage.cache_read_input_tokens:,}",
        f"{usage.output_tokens:,}",
        f"{run.upstream_requests:,}",
    ]


def run_demo(ledger: Path, *, scale: float = 0.25, console: Console | None = None) -> tuple[RunResult, RunResult]:
    console = console or Console()
    ledger = ledger.resolve()
    for stale in (ledger, ledger.with_name(ledger.name + "-journal")):
        stale.unlink(missing_ok=True)  # a fresh ledger each time, so its totals are this run's
    workload = real_estate_mix(seed=0, scale=scale)
    settings = with_optimizations(Settings(), set(optimization_names()))
    price_book = load_price_book(settings.pricing)
    console.print(
        f"[bold]clawback demo[/]: {len(workload)} requests of a real-estate lead assistant (lead chats, a "
        "lead-scoring job, property matching, FAQ), replayed against the built-in simulator of the Anthropic "
        "API. No key, no network.",
        highlight=False,
    )
    columns = (TextColumn("{task.description:<44}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        plain = progress.add_task("without clawback (straight to the API)", total=len(workload))
        through = progress.add_task("with clawback (through the gateway)", total=len(workload))
        baseline = replay(workload, price_book=price_book, on_step=lambda _: progress.advance(plain))
        optimized = replay(
            workload, config="clawback", settings=settings, price_book=price_book,
            ledger_url=f"sqlite:///{ledger}", on_step=lambda _: progress.advance(through),
        )  # fmt: skip

    table = Table("", "cost", "input", "cache write", "cache read", "output", "API calls", title_justify="left")
    table.add_row(*_row("without clawback", baseline))
    table.add_row(*_row("with clawback", optimized))
    console.print(table)
    saved = baseline.simulator_micro_usd - optimized.simulator_micro_usd
    share = saved / baseline.simulator_micro_usd if baseline.simulator_micro_usd else 0.0
    console.print(
        f"It cost [bold]${usd(optimized.simulator_micro_usd):,.4f}[/]; it would have cost "
        f"[bold]${usd(baseline.simulator_micro_usd):,.4f}[/]: [bold green]${usd(saved):,.4f} saved ({share:.1%})[/].",
        highlight=False,
    )
    console.print("Where the savings came from (as each optimization recorded it in the ledger):")
    claimed = 0
    for stage, micro in sorted(optimized.savings_by_stage.items(), key=lambda kv: -kv[1]):
        claimed += micro
        console.print(f"  {stage:<16} ${usd(micro):,.4f}", highlight=False)
    if not optimized.savings_by_stage:
        console.print(f"  no optimization recorded a saving (available: {', '.join(optimization_names()) or 'none'})")
    if saved != claimed:
        console.print(f"  {'not attributed':<16} ${usd(saved - claimed):,.4f}  (measured minus recorded)")
    if optimized.fact_retention is not None:
        console.print(
            f"Quality: {optimized.fact_retention:.1%} of the facts later chat turns needed reached the model.",
            highlight=False,
        )
    if optimized.cache_hits:
        console.print(
            f"Quality: {optimized.cache_hits} answers came from cache, "
            f"{optimized.false_hits} of them for a different question.",
            highlight=False,
        )
    console.print(
        "Both costs are the simulator's own billing; the ledger's total equals it "
        f"({'checked' if optimized.consistent else '[red]MISMATCH[/]'}). Ledger: {ledger}",
        highlight=False,
    )
    console.print(
        "\n[bold]See it[/]: open the dashboard on the ledger the demo just wrote, or mail its report.\n"
        f"  clawback dashboard --ledger sqlite:///{ledger}      # then open http://127.0.0.1:8501\n"
        f"  clawback report --ledger sqlite:///{ledger} --period day --format html --out clawback-report.html",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        "\n[bold]Next[/]: run it for your own traffic.\n"
        "  clawback simulate &                              # or skip this and set ANTHROPIC_API_KEY\n"
        "  clawback keys create my-app                      # prints a cb-… key\n"
        "  clawback serve --upstream http://127.0.0.1:8788\n"
        "  export ANTHROPIC_BASE_URL=http://127.0.0.1:8787 ANTHROPIC_API_KEY=cb-…   # your client, unchanged\n"
        "  clawback whatif your-requests.jsonl              # estimate first, on a log of your requests\n"
        "  clawback bench savings --workload all            # every optimization, in dollars and quality",
        highlight=False,
        soft_wrap=True,
    )
    return baseline, optimized


def demo(
    ledger: Annotated[
        Path, typer.Option(help="SQLite file the demo's ledger is written to (replaced on each run)")
    ] = Path("clawback-demo.db"),
    scale: Annotated[float, typer.Option(help="Size of the replayed traffic", min=0.01)] = 0.25,
) -> None:
    """Run the simulator and the gateway, replay a real-estate assistant's traffic, show the savings."""
    run_demo(ledger, scale=scale)
