"""The ``clawback`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clawback import __version__
from clawback.config import ConfigError, Settings, load_settings
from clawback.pricing_cli import pricing_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Cut the Claude API bill and prove it.")
app.add_typer(pricing_app, name="pricing")
console = Console()
err_console = Console(stderr=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML configuration file (CLAWBACK_* variables override it)"),
]


def settings_or_exit(config: Path | None, **overrides: object) -> Settings:
    """Load the configuration, or print what is wrong with it and exit 2."""
    try:
        return load_settings(config, **overrides)
    except ConfigError as exc:
        err_console.print(f"[bold red]clawback:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"clawback {__version__}")
