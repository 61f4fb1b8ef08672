"""``clawback pricing``: show the price table and install a newer one.

Prices change more often than releases ship (Anthropic cut Sonnet 5.5 cache reads mid-release), so an operator
must be able to see which table is in force, how old it is, and replace it without upgrading clawback.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from clawback.cli.options import ConfigOption, settings_or_exit
from clawback.pricing import ModelPrice, PriceBook, PriceTableError, load_price_book, user_price_file

__all__ = ["pricing_app"]

pricing_app = typer.Typer(no_args_is_help=True, help="Model prices: list the table in force, install a newer one.")


def _console(stderr: bool = False) -> Console:
    # Built per command (not at import) so that COLUMNS and test runners' streams are honoured.
    return Console(stderr=stderr, width=max(Console().width, 150))


def _usd(value: Decimal) -> str:
    """$8, $12.50, $0.125: cents always shown when there is a fraction, never a rounded rate."""
    if value == value.to_integral_value():
        return f"${value.to_integral_value():f}"
    exponent = value.normalize().as_tuple().exponent
    places = max(2, -exponent) if isinstance(exponent, int) else 2
    return f"${value:.{places}f}"


def _notes(price: ModelPrice) -> str:
    notes: list[str] = []
    if price.long_prompt is not None:
        tier = price.long_prompt
        gate = f" with {tier.requires_beta}" if tier.requires_beta else ""
        notes.append(
            f"prompt > {tier.threshold_tokens:,}{gate}: whole request at "
            f"{_usd(tier.rates.input)}/{_usd(tier.rates.output)}"
        )
    if price.fast is not None:
        notes.append(f"fast {_usd(price.fast.input)}/{_usd(price.fast.output)}")
    if price.us_residency:
        notes.append("US-only x1.1")
    if price.aliases:
        notes.append("aka " + ", ".join(price.aliases))
    if not price.confirmed:
        notes.append("[yellow]unconfirmed[/]")
    return "; ".join(notes)


@pricing_app.command("list")
def list_prices(
    config: ConfigOption = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Show this table instead of the one in force")
    ] = None,
) -> None:
    """Show every model's prices (USD per million tokens), minimum cacheable prompt and the table's date."""
    settings = settings_or_exit(config).pricing
    try:
        book = PriceBook.from_file(file, fallback_model=settings.fallback_model) if file else load_price_book(settings)
    except PriceTableError as exc:
        _console(stderr=True).print(f"[bold red]clawback:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    table = Table(
        title=f"Claude prices, USD per million tokens: table as of {book.as_of} ({book.origin})",
        title_justify="left",
    )
    table.add_column("model", no_wrap=True)
    table.add_column("family")
    for header in ("input", "output", "5m write", "1h write", "cache read"):
        table.add_column(header, justify="right")
    table.add_column("min cache", justify="right")
    table.add_column("context", justify="right")
    table.add_column("notes", overflow="fold")
    for price in book.models():
        table.add_row(
            price.model,
            price.family,
            _usd(price.input),
            _usd(price.output),
            _usd(price.cache_write_5m),
            _usd(price.cache_write_1h),
            _usd(price.cache_read),
            f"{price.min_cacheable_tokens:,}",
            f"{price.context_window:,}",
            _notes(price),
        )
    console = _console()
    console.print(table)
    console.print(
        f"Unknown models are priced as {book.fallback.model}. Batch API: 50 % off every category. "
        "Sources per row: the table file.",
        highlight=False,
    )


@pricing_app.command("update")
def update_prices(
    file: Annotated[Path, typer.Argument(help="A price table in the same YAML schema as the bundled one")],
    config: ConfigOption = None,
    to: Annotated[
        Path | None,
        typer.Option("--to", help="Install here (default: pricing.data_file, else ~/.config/clawback/prices.yaml)"),
    ] = None,
) -> None:
    """Validate a new price table and install it as the one clawback uses."""
    settings = settings_or_exit(config).pricing
    err = _console(stderr=True)
    try:
        book = PriceBook.from_file(file, fallback_model=settings.fallback_model)
    except PriceTableError as exc:
        err.print(f"[bold red]clawback:[/] invalid price table, nothing installed:\n  {exc}", highlight=False)
        raise typer.Exit(2) from None
    destination = (to or (Path(settings.data_file) if settings.data_file else user_price_file())).expanduser()
    destination.parent.mkdir(parents=True, exist_ok=True)
    # Write beside the destination and rename: a reader never sees half a table.
    fd, tmp_name = tempfile.mkstemp(prefix=".prices-", suffix=".yaml", dir=destination.parent)
    os.close(fd)
    try:
        shutil.copyfile(file, tmp_name)
        os.replace(tmp_name, destination)
    except OSError as exc:
        Path(tmp_name).unlink(missing_ok=True)
        err.print(f"[bold red]clawback:[/] cannot install the price table at {destination}: {exc}", highlight=False)
        raise typer.Exit(1) from None
    console = _console()
    console.print(
        f"Installed a price table with {len(book.models())} models (as of {book.as_of}) at {destination}",
        highlight=False,
    )
    if to is not None and not settings.data_file and destination != user_price_file():
        console.print(
            f"Set pricing.data_file: {destination} (or CLAWBACK_PRICING__DATA_FILE) so that clawback uses it.",
            highlight=False,
        )
    console.print("Restart running gateways to pick it up.", highlight=False)
