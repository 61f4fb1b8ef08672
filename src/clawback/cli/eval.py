"""``clawback eval pruning``: each pruning strategy scored on the labelled reference workloads, or the configured
policy on a file of labelled conversations (``--conversations FILE``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from clawback.bench.pruning_eval import ConversationReport, evaluate, evaluate_conversations
from clawback.cli.bench import wide_console
from clawback.cli.options import ConfigOption, err_console, settings_or_exit
from clawback.config import Settings
from clawback.workloads.conversations import CONVERSATION_MODEL

__all__ = ["conversations_command", "eval_app", "eval_command"]

eval_app = typer.Typer(no_args_is_help=True, help="Score optimizations against the labelled reference workloads.")


@eval_app.command("pruning")
def eval_pruning(
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables")] = False,
    workload: Annotated[list[str] | None, typer.Option(help="Workloads (default: lead_chat, agentic)")] = None,
    seed: Annotated[int, typer.Option(help="Workload seed")] = 0,
    scale: Annotated[float, typer.Option(help="Workload size", min=0.01)] = 1.0,
    conversations: Annotated[
        Path | None,
        typer.Option(
            "--conversations", help="Score this JSONL file of labelled conversations instead (configured policy)"
        ),
    ] = None,
    model: Annotated[str, typer.Option(help="--conversations: the model the requests go to")] = CONVERSATION_MODEL,
    long_turns: Annotated[int, typer.Option(help="--conversations: what a long conversation is, in turns", min=1)] = 20,
    config: ConfigOption = None,
) -> None:
    """Per pruning strategy: input-token and cost reduction (prompt caching on), and fact retention."""
    if conversations is not None:
        conversations_command(settings_or_exit(config), conversations, json_output=json_output, model=model,
                              long_turns=long_turns)  # fmt: skip
        return
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


def conversations_command(
    settings: Settings, path: Path, *, json_output: bool, model: str = CONVERSATION_MODEL, long_turns: int = 20
) -> None:
    """``clawback eval pruning --conversations FILE``: a table per conversation and the totals, or with
    ``--json`` one JSON object on the last line (the totals' named fields at its top level)."""
    try:
        report = evaluate_conversations(path, base=settings.pruning, model=model, long_turns=long_turns)
    except ValueError as exc:  # ConversationFileError, or an unknown --model
        err_console.print(f"[bold red]clawback:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    result = _conversations_json(report, path, model, long_turns)
    if json_output:
        typer.echo(orjson.dumps(result).decode())
        return
    console = wide_console()
    table = Table(title=f"pruning on {path} ({model}, pruned + prompt cache against prompt cache alone)")
    for column in ("conversation", "turns", "history -%", "input -%", "$ cache", "$ pruned+cache", "vs cache",
                   "facts kept", "stale shown", "prefix stable", "facts lost"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("conversation", "facts lost") else "right")
    for name, row in report.conversations.items():
        table.add_row(
            name, str(row["turns"]), f"{row['history_token_reduction_cached']:.1%}",
            f"{row['input_token_reduction_cached']:.1%}", f"{row['cost_usd']['cache']:.4f}",
            f"{row['cost_usd']['pruned+cache']:.4f}", f"{-row['cost_reduction_vs_cache']:+.1%}",
            f"{row['fact_retention_cached']:.0%} of {row['facts_needed']}",
            ", ".join(row["stale_shown"]) or "-", f"{row['prefix_stability_cached']:.0%}",
            "; ".join(row["facts_lost"]) or "-",
        )  # fmt: skip
    console.print(table)
    for label, head in (("every request", report.summary), (f"requests at {long_turns}+ turns", report.long)):
        bare = head["without_cache"]
        console.print(
            f"{label}: {head['conversations']} conversations, {head['requests']} requests; facts kept "
            f"{head['fact_retention']:.1%} of {head['facts_needed']}; stale shown as current "
            f"{head['stale_as_current']} of {head['stale_facts']}; history {-head['history_reduction']:+.1%}, "
            f"input {-head['input_reduction']:+.1%}; cost ${head['cost_usd_pruned_and_cache']:.4f} against "
            f"${head['cost_usd_cache_alone']:.4f} with caching alone ({-head['cost_reduction_vs_cache_alone']:+.1%}); "
            f"prefix stable on {head['prefix_stability']:.1%} of requests; without caching: facts kept "
            f"{bare['fact_retention']:.1%}, history {-bare['history_reduction']:+.1%}, stale shown "
            f"{bare['stale_as_current']}",
            highlight=False,
        )
    for problem in report.label_problems:
        console.print(f"left out of the score: {problem.conversation}: {problem.fact!r} ({problem.reason})")


def _conversations_json(report: ConversationReport, path: Path, model: str, long_turns: int) -> dict[str, object]:
    return {
        **report.summary,
        "file": str(path),
        "model": model,
        "long_turns": long_turns,
        "long": report.long,
        "all_requests": report.all_requests,
        "long_conversations": report.long_conversations,
        "per_conversation": report.conversations,
        "label_problems": [
            {"conversation": p.conversation, "fact": p.fact, "reason": p.reason} for p in report.label_problems
        ],
    }
