"""The ``--config`` option and settings loading that every ``clawback`` command shares.

In a module of its own so that the sub-command groups (``pricing``, ``cache``) can use it without importing
``cli.py``, which imports them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clawback.config import ConfigError, Settings, load_settings

__all__ = ["ConfigOption", "err_console", "settings_or_exit"]

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
