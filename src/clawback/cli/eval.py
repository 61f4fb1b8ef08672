"""``clawback eval pruning``: each pruning strategy scored on the labelled reference workloads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from clawback.bench.pruning_eval import evaluate
from clawback.cli.bench import wide_console
from clawback.cli.options import ConfigOption, settings_or_exit
from clawback.config import Settings

__all__ = ["eval_app", "eval_command"]

eval_app = typer.Typer(no_args_is_help=True, help="Score optimizations against the labelled reference workloads.")


@eval_app.command("pruning")
def eval_pruning(
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables")] = False,
    workload: Annotated[list[str] | None, typer.Option(help="Workloads (default: lead_chat, agentic)")] = None,
    seed: Annotated[int, typer.Option(help="Workload seed")] = 0,
    scale: Annotated[float, typer.Option(help="Workload size", min=0.01)] = 1.0,
    config: ConfigOption = None,
) -> None:
    """Per pruning strategy: input-token and cost reduction (prompt caching on), and fact retention."""
    eval_command(settings_or_exit(config), workload or ["lead_chat", "agentic"], json_output=json_output, seed=seed,
                 scale=scale)  # fmt: skip


def eval_command(settings: Settings, workloads: Sequence[str], *, json_output: bool, seed: int, scale: float) -> None:
    """``clawback eval pruning``: tables per strategy, or one JSON object with ``--json``."""
    reports = evaluate(workloads, seed=seed, scale=scale, base=settings.pruning)
    units = reports[0].turn_units if reports else {}
    result = {
        "workloads": list(workloads),
        "seed": seed,
        "scale": scale,
        "turns": units,
        "strategies": {
            r.strategy: {
                "all_requests": r.all,
                "long_conversations": r.long,
                "workloads": {
                    name: {"all_requests": w["all"], "long_conversations": w["long"]} for name, w in r.workloads.items()
                },
            }
            for r in reports
        },
    }
    if json_output:
        Console().print_json(orjson.dumps(result).decode())
        return
    console = wide_console()
    trips = [name for name, unit in units.items() if unit == "round trips"]
    long_label = "conversations at 20+ turns" + (f" ({', '.join(trips)}: 20+ API round trips)" if trips else "")
    scopes = ["all", *workloads] if len(workloads) > 1 else list(workloads)
    for label, key in (("all requests", "all"), (long_label, "long")):
        table = Table(title=f"pruning on {', '.join(workloads)}: {label}")
        for column in ("strategy", "workload", "reqs", "input -%", "history -%", "$ cache", "$ pruned+cache",
                       "vs cache", "facts kept", "facts kept (cached)"):  # fmt: skip
            table.add_column(column, justify="left" if column in ("strategy", "workload") else "right", no_wrap=True)
        table.columns[3].header, table.columns[4].header = "input -% (pruned / cached)", "history -% (same)"
        for report in reports:
            for scope in scopes:
                row = getattr(report, key) if scope == "all" else report.workloads[scope][key]
                table.add_row(
                    report.strategy if scope == scopes[0] else "", scope, str(row["requests"]),
                    f"{row['input_token_reduction']:.1%} / {row['input_token_reduction_cached']:.1%}",
                    f"{row['history_token_reduction']:.1%} / {row['history_token_reduction_cached']:.1%}",
                    f"{row['cost_usd']['cache']:.4f}", f"{row['cost_usd']['pruned+cache']:.4f}",
                    f"{-row['cost_reduction_vs_cache']:+.1%}", f"{row['fact_retention']:.1%}/{row['facts_needed']}",
                    f"{row['fact_retention_cached']:.1%}",
                    end_section=scope == scopes[-1],
                )  # fmt: skip
        console.print(table)
