"""``clawback keys create|list|revoke``: the keys clients authenticate with."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from clawback.cli.options import ConfigOption, err_console, settings_or_exit

__all__ = ["keys_app"]

console = Console()
keys_app = typer.Typer(no_args_is_help=True, help="Manage clawback keys (clients authenticate with them).")


def _key_store(config: Path | None) -> Any:
    from clawback.storage.keys import KeyStore
    from clawback.storage.migrate import migrate

    settings = settings_or_exit(config)
    migrate(settings.ledger.url)
    return KeyStore(settings.ledger.url)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="A name for the key")] = "",
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="team=…, user=…, feature=…")] = None,
    config: ConfigOption = None,
) -> None:
    """Create a key; its secret is printed once and never stored."""
    labels: dict[str, str] = {}
    for item in label or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            err_console.print(f"[bold red]clawback:[/] --label takes name=value, got {item!r}")
            raise typer.Exit(2)
        labels[key] = value
    key, secret = _key_store(config).create(name, labels)
    console.print(f"created {key.id} {labels or ''}")
    console.print(secret, highlight=False, soft_wrap=True)


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List keys (never their secrets)."""
    from rich.table import Table

    table = Table("id", "name", "labels", "created", "revoked")
    for key in _key_store(config).list():
        table.add_row(key.id, key.name, ", ".join(f"{k}={v}" for k, v in key.labels.items()),
                      f"{key.created_at:%Y-%m-%d %H:%M}" if key.created_at else "",
                      f"{key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "")  # fmt: skip
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id (key_…)")], config: ConfigOption = None
) -> None:
    """Revoke a key: its requests are refused from now on."""
    if not _key_store(config).revoke(key_id):
        err_console.print(f"[bold red]clawback:[/] no active key {key_id}")
        raise typer.Exit(1)
    console.print(f"revoked {key_id}")
