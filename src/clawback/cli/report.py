"""``clawback report``: the day's, week's or month's costs, savings, spenders and anomalies, for finance."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clawback.cli.options import ConfigOption, err_console, settings_or_exit

__all__ = ["report"]

console = Console()
_FORMATS = ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"]


class ReportPeriod(StrEnum):
    day = "day"
    week = "week"
    month = "month"


class ReportFormat(StrEnum):
    md = "md"
    html = "html"
    pdf_html = "pdf-ready-html"


def report(
    period: Annotated[ReportPeriod, typer.Option(help="The period ending now")] = ReportPeriod.week,
    format: Annotated[
        ReportFormat, typer.Option("--format", help="md, html (charts embedded) or pdf-ready-html (print styles)")
    ] = ReportFormat.md,
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: standard output)")] = None,
    ledger: Annotated[str | None, typer.Option(help="Ledger database URL (default: ledger.url)")] = None,
    until: Annotated[
        datetime | None, typer.Option(help="End of the period, UTC (default: now), e.g. 2026-12-01", formats=_FORMATS)
    ] = None,
    config: ConfigOption = None,
) -> None:
    """What was spent, what it would have cost, where the savings came from, who spent most, anomalies."""
    from clawback.dashboard.data import LedgerQueries
    from clawback.reports.period import build_report
    from clawback.reports.render import render_html, render_markdown
    from clawback.storage.engine import make_engine
    from clawback.storage.migrate import migrate

    settings = settings_or_exit(config)
    url = ledger or settings.ledger.url
    try:
        migrate(url)  # idempotent: an older ledger gets its rollup tables (backfilled) first
    except Exception as exc:
        err_console.print(f"[bold red]clawback:[/] cannot open the ledger {url}: {exc}", highlight=False)
        raise typer.Exit(1) from None
    engine = make_engine(url)
    try:
        end = None if until is None else until.replace(tzinfo=until.tzinfo or UTC)
        built = build_report(LedgerQueries(engine), period.value, now=end)
    finally:
        engine.dispose()
    if format is ReportFormat.md:
        text = render_markdown(built)
    else:
        text = render_html(built, pdf_ready=format is ReportFormat.pdf_html)
    if out is None:
        print(text)
        return
    out.write_text(text, encoding="utf-8")
    console.print(f"report written to {out} ({len(text.encode()) / 1e6:.1f} MB)", highlight=False)
