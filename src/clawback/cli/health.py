"""``clawback health`` and ``clawback validate-performance``: checks for cron and CI (exit non-zero on failure)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.console import Console
from rich.table import Table

from clawback.cli.options import ConfigOption, err_console, settings_or_exit

__all__ = ["health", "validate_performance"]

console = Console()
_STYLE = {"ok": "green", "warn": "yellow", "skipped": "dim", "down": "bold red"}
_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]


def health(
    json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table")] = False,
    gateway: Annotated[
        str | None, typer.Option(help="The running gateway's URL (default: gateway.host and gateway.port)")
    ] = None,
    no_gateway: Annotated[bool, typer.Option("--no-gateway", help="No gateway to check (in-process wrapper)")] = False,
    ledger: Annotated[str | None, typer.Option(help="Ledger database URL (default: ledger.url)")] = None,
    upstream: Annotated[str | None, typer.Option(help="Upstream URL (default: upstream.url or the real API)")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds each part may take to answer", min=0.1)] = 3.0,
    config: ConfigOption = None,
) -> None:
    """Check the upstream, ledger database, Redis, the gateway's ledger lag and journal, cache hit rates."""
    from clawback.reports.health import check_health

    settings = settings_or_exit(config)
    if ledger:
        settings.ledger = settings.ledger.model_copy(update={"url": ledger})
    if upstream:
        settings.upstream = settings.upstream.model_copy(update={"url": upstream})
    gateway_url = None if no_gateway else (gateway or f"http://{settings.gateway.host}:{settings.gateway.port}")
    report = check_health(settings, gateway_url=gateway_url, timeout=timeout)
    if json:
        print(orjson.dumps(report.to_json(), default=str).decode())
    else:
        table = Table("part", "status", "detail", title_justify="left")
        for check in report.checks:
            table.add_row(check.part, f"[{_STYLE[check.status]}]{check.status}[/]", check.detail)
        console.print(table)
    if not report.healthy:
        parts = ", ".join(f"{c.part} ({c.detail})" for c in report.down)
        err_console.print(f"[bold red]clawback health: DOWN:[/] {parts}", highlight=False, soft_wrap=True)
        raise typer.Exit(1)


def validate_performance(
    baseline: Annotated[Path | None, typer.Option(help="Baseline JSON to compare with")] = None,
    save_baseline: Annotated[Path | None, typer.Option(help="Write this period's figures as a baseline")] = None,
    period: Annotated[str, typer.Option(help="day, week or month, ending at --until")] = "week",
    until: Annotated[
        datetime | None, typer.Option(help="End of the period, UTC (default: now)", formats=_FORMATS)
    ] = None,
    ledger: Annotated[str | None, typer.Option(help="Ledger database URL (default: ledger.url)")] = None,
    json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table")] = False,
    config: ConfigOption = None,
) -> None:
    """This period's latency, throughput and cost per request against a stored baseline; exit 1 on a regression."""
    from clawback.dashboard.data import LedgerQueries
    from clawback.reports.performance import compare, measure
    from clawback.storage.engine import make_engine

    settings = settings_or_exit(config)
    engine = make_engine(ledger or settings.ledger.url)
    try:
        end = None if until is None else until.replace(tzinfo=until.tzinfo or UTC)
        figures = measure(LedgerQueries(engine), period, now=end)
    except ValueError as exc:
        err_console.print(f"[bold red]clawback:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except Exception as exc:
        err_console.print(f"[bold red]clawback:[/] cannot read the ledger: {exc}".splitlines()[0], highlight=False)
        raise typer.Exit(1) from None
    finally:
        engine.dispose()
    if save_baseline is not None:
        save_baseline.write_bytes(orjson.dumps(figures.to_json(), option=orjson.OPT_INDENT_2))
    if baseline is None:
        print(orjson.dumps(figures.to_json()).decode() if json else _figures_text(figures.to_json()))
        return
    try:
        stored = orjson.loads(baseline.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        err_console.print(f"[bold red]clawback:[/] cannot read the baseline {baseline}: {exc}", highlight=False)
        raise typer.Exit(2) from None
    result = compare(figures, stored)
    if json:
        print(orjson.dumps(result).decode())
    else:
        table = Table("figure", "baseline", "now", "change", "verdict", title_justify="left")
        for row in result["figures"]:
            verdict = "[bold red]REGRESSION[/]" if row["regression"] else "ok"
            table.add_row(row["name"], _fmt(row["baseline"]), _fmt(row["current"]), row["change"], verdict)
        console.print(table)
    if result["regressions"]:
        err_console.print(f"[bold red]clawback: regression:[/] {', '.join(result['regressions'])}", highlight=False)
        raise typer.Exit(1)


def _fmt(value: object) -> str:
    return "-" if value is None else (f"{value:,.4g}" if isinstance(value, float) else str(value))


def _figures_text(data: dict[str, object]) -> str:
    return "\n".join(f"{k}: {_fmt(v)}" for k, v in data.items())
