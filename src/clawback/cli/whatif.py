"""``clawback whatif LOG.jsonl``: what clawback would have saved on your own traffic, before you deploy it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console

from clawback.bench.savings import render
from clawback.bench.whatif import DEFAULT_OUTPUT_TOKENS, ESTIMATED, MEASURED, LogError, whatif
from clawback.cli.bench import wide_console
from clawback.cli.options import ConfigOption, settings_or_exit
from clawback.config import Settings

__all__ = ["whatif_command", "whatif_run"]


def whatif_command(
    log: Annotated[Path, typer.Argument(help="JSONL: one Messages API request per line, with a timestamp")],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line")] = False,
    output_tokens: Annotated[int, typer.Option(help="Answer length assumed when a line has no usage", min=1)] = 256,
    config: ConfigOption = None,
) -> None:
    """Estimate what clawback would have saved on your own request log, before deploying anything."""
    whatif_run(settings_or_exit(config), log, json_output=json_output, output_tokens=output_tokens)


def whatif_run(settings: Settings, log: Path, *, json_output: bool, output_tokens: int = DEFAULT_OUTPUT_TOKENS) -> None:
    out, err = wide_console(), Console(stderr=True)
    try:
        report = whatif(log, settings=settings, output_tokens=output_tokens, console=err)
    except (LogError, OSError) as exc:
        err.print(f"[bold red]clawback:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    render(report.pop("_results"), out)
    logged = report["logged_cost_usd"]
    out.print(f"\n[bold]{report['requests']} requests[/] over {report['span_s'] / 3600:.1f} h, "
              f"{report['exact_repeats']} exact repeats.", highlight=False)  # fmt: skip
    if logged is not None:
        out.print(f"Measured: your log's usage prices at ${logged:,.4f}"
                  + (f"; clawback's token estimate is {report['token_estimate_ratio']:.2f}x the logged input tokens."
                     if report["token_estimate_ratio"] else "."), highlight=False)  # fmt: skip
    out.print(
        f"Estimated: ${report['simulated_baseline_cost_usd']:,.4f} -> ${report['simulated_optimized_cost_usd']:,.4f} "
        f"in the simulator ({report['cost_reduction']:.1%} less); about ${report['estimated_savings_usd']:,.4f} "
        f"saved on the {report['savings_basis']}.",
        highlight=False,
    )
    out.print("[bold]measured[/]: " + "; ".join(MEASURED), highlight=False)
    out.print("[bold]estimated[/]: " + "; ".join(ESTIMATED), highlight=False)
    if json_output:
        print(orjson.dumps(report).decode(), flush=True)
