"""The ``clawback`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from clawback import __version__
from clawback.cache_cli import cache_app
from clawback.cli_config import ConfigOption, err_console, settings_or_exit
from clawback.config import ConfigError
from clawback.pricing import PriceTableError
from clawback.pricing_cli import pricing_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Cut the Claude API bill and prove it.")
app.add_typer(pricing_app, name="pricing")
app.add_typer(cache_app, name="cache")
console = Console()


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"clawback {__version__}")


@app.command()
def simulate(
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8788)")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1)")] = None,
) -> None:
    """Run a faithful stand-in for the Anthropic API (no key, no network)."""
    from clawback.serving import run_app
    from clawback.upstream.simulator.app import create_simulator_app

    settings = settings_or_exit(config)
    sim = settings.simulator.model_copy(update={k: v for k, v in {"port": port, "host": host}.items() if v})
    console.print(
        f"clawback simulator on http://{sim.host}:{sim.port}  (ANTHROPIC_BASE_URL=http://{sim.host}:{sim.port})"
    )
    run_app(create_simulator_app(sim), sim.host, sim.port)


@app.command()
def serve(
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8787)")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1)")] = None,
    upstream: Annotated[
        str | None,
        typer.Option(help="Upstream base URL (the simulator, say); default: the real API if ANTHROPIC_API_KEY"),
    ] = None,
) -> None:
    """Run the Anthropic-compatible gateway. Point clients at it with ANTHROPIC_BASE_URL."""
    from clawback.gateway.app import create_gateway_app
    from clawback.serving import run_app

    settings = settings_or_exit(config)
    updates = {k: v for k, v in {"port": port, "host": host}.items() if v}
    settings.gateway = settings.gateway.model_copy(update=updates)
    if upstream:
        settings.upstream = settings.upstream.model_copy(update={"url": upstream})
    try:
        app_ = create_gateway_app(settings)
    except (ConfigError, PriceTableError) as exc:  # a price table the user named and cannot be used
        err_console.print(f"[bold red]clawback:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    gw = settings.gateway
    console.print(f"clawback gateway on http://{gw.host}:{gw.port} -> {app_.gateway.upstream_url}")
    console.print(f"  ANTHROPIC_BASE_URL=http://{gw.host}:{gw.port}  (ledger: {settings.ledger.url})")
    stages = " -> ".join(stage.name for stage in app_.gateway.pipeline.stages)
    console.print(f"  pipeline: {stages} -> upstream")
    run_app(app_, gw.host, gw.port)


keys_app = typer.Typer(no_args_is_help=True, help="Manage clawback keys (clients authenticate with them).")
app.add_typer(keys_app, name="keys")


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


bench_app = typer.Typer(no_args_is_help=True, help="Measure what clawback saves, in dollars and quality.")
app.add_typer(bench_app, name="bench")


@bench_app.command("savings")
def bench_savings(
    workload: Annotated[str, typer.Option(help="A reference workload, or all")] = "all",
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line")] = False,
    seed: Annotated[int, typer.Option(help="Workload seed")] = 0,
    scale: Annotated[float, typer.Option(help="Workload size (1.0 = reference size)", min=0.01)] = 1.0,
    config: ConfigOption = None,
) -> None:
    """Replay workloads through the simulator: baseline, full pipeline, each optimization alone."""
    from clawback.bench.cli import savings_command

    savings_command(settings_or_exit(config), workload, json_output=json_output, seed=seed, scale=scale)


@app.command()
def whatif(
    log: Annotated[Path, typer.Argument(help="JSONL: one Messages API request per line, with a timestamp")],
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line")] = False,
    output_tokens: Annotated[int, typer.Option(help="Answer length assumed when a line has no usage", min=1)] = 256,
    config: ConfigOption = None,
) -> None:
    """Estimate what clawback would have saved on your own request log, before deploying anything."""
    from clawback.whatif import whatif_command

    whatif_command(settings_or_exit(config), log, json_output=json_output, output_tokens=output_tokens)


@app.command()
def demo(
    ledger: Annotated[
        Path, typer.Option(help="SQLite file the demo's ledger is written to (replaced on each run)")
    ] = Path("clawback-demo.db"),
    scale: Annotated[float, typer.Option(help="Size of the replayed traffic", min=0.01)] = 0.25,
) -> None:
    """Run the simulator and the gateway, replay a real-estate assistant's traffic, show the savings."""
    from clawback.demo import run_demo

    run_demo(ledger, scale=scale)


eval_app = typer.Typer(no_args_is_help=True, help="Score optimizations against the labelled reference workloads.")
app.add_typer(eval_app, name="eval")


@eval_app.command("pruning")
def eval_pruning(
    json_output: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables")] = False,
    workload: Annotated[list[str] | None, typer.Option(help="Workloads (default: lead_chat, agentic)")] = None,
    seed: Annotated[int, typer.Option(help="Workload seed")] = 0,
    scale: Annotated[float, typer.Option(help="Workload size", min=0.01)] = 1.0,
    config: ConfigOption = None,
) -> None:
    """Per pruning strategy: input-token and cost reduction (prompt caching on), and fact retention."""
    from clawback.pipeline.pruning.evaluate import eval_command

    eval_command(settings_or_exit(config), workload or ["lead_chat", "agentic"], json_output=json_output, seed=seed,
                 scale=scale)  # fmt: skip
