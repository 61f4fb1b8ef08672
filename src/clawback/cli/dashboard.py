"""``clawback dashboard``: the cost dashboard in a browser, over the ledger of any backend."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from clawback.cli.options import ConfigOption, err_console, settings_or_exit
from clawback.config import ConfigError

__all__ = ["dashboard"]

console = Console()


def dashboard(
    ledger: Annotated[str | None, typer.Option(help="Ledger database URL (default: ledger.url)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default dashboard.port, 8501)")] = None,
    host: Annotated[
        str | None, typer.Option(help="Interface (default 127.0.0.1; beyond localhost needs dashboard.password)")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Open the cost dashboard: spend, savings, caches, latency, errors, largest spenders."""
    from clawback.dashboard.server import DashboardProcess
    from clawback.storage.migrate import migrate

    settings = settings_or_exit(config)
    if ledger:
        settings.ledger = settings.ledger.model_copy(update={"url": ledger})
    updates = {k: v for k, v in {"port": port, "host": host}.items() if v}
    settings.dashboard = settings.dashboard.model_copy(update=updates)
    try:
        process = DashboardProcess(settings, config)
    except ConfigError as exc:
        err_console.print(f"[bold red]clawback:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    try:
        migrate(settings.ledger.url)  # idempotent; brings an older ledger's rollup tables up to date
    except Exception as exc:
        err_console.print(f"[bold red]clawback:[/] cannot open the ledger {ledger or settings.ledger.url}: {exc}")
        raise typer.Exit(1) from None
    process.start(quiet=False)
    console.print(f"clawback dashboard on {process.url}  (ledger: {settings.ledger.url})", highlight=False)
    try:
        raise typer.Exit(process.wait())
    except KeyboardInterrupt:
        process.stop()
