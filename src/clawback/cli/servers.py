"""``clawback version``, ``simulate`` and ``serve``: the commands that start a server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from clawback import __version__
from clawback.cli.options import ConfigOption, err_console, settings_or_exit
from clawback.config import ConfigError, Settings
from clawback.pricing import PriceTableError

__all__ = ["serve", "simulate", "version"]

console = Console()


def version() -> None:
    """Print the version."""
    console.print(f"clawback {__version__}")


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


def serve(
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8787)")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1)")] = None,
    upstream: Annotated[
        str | None,
        typer.Option(help="Upstream base URL (the simulator, say); default: the real API if ANTHROPIC_API_KEY"),
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes on the port (default gateway.workers, 1)", min=1)
    ] = None,
) -> None:
    """Run the Anthropic-compatible gateway. Point clients at it with ANTHROPIC_BASE_URL."""
    from clawback.gateway.app import create_gateway_app
    from clawback.serving import GATEWAY_GC_THRESHOLD, run_app

    settings = settings_or_exit(config)
    updates = {k: v for k, v in {"port": port, "host": host, "workers": workers}.items() if v}
    settings.gateway = settings.gateway.model_copy(update=updates)
    if upstream:
        settings.upstream = settings.upstream.model_copy(update={"url": upstream})
    if settings.gateway.workers > 1:
        _serve_workers(settings, config, upstream)
        return
    from clawback.storage.journal import claim_journal_slot

    # Replicas sharing a journal directory (a volume) each take a slot of their own, as workers do.
    settings.ledger = settings.ledger.model_copy(
        update={"journal_path": str(claim_journal_slot(settings.ledger.journal_path))}
    )
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
    run_app(app_, gw.host, gw.port, gc_threshold=GATEWAY_GC_THRESHOLD)


def _serve_workers(settings: Settings, config: Path | None, upstream: str | None) -> None:
    """``serve --workers N``: check what the workers would refuse once, here, then let uvicorn run them.

    The workers read the same file and environment; the command line's options travel as ``CLAWBACK_*``
    variables (which win over the file, as they do for any setting).
    """
    from clawback.gateway.app import WORKER_CONFIG_ENV, GatewayApp
    from clawback.gateway.process import resolve_upstream
    from clawback.serving import run_workers
    from clawback.storage.engine import engine_from_settings
    from clawback.storage.pool import connection_budget_error

    gw = settings.gateway
    try:
        upstream_url, _ = resolve_upstream(settings)
        engine = engine_from_settings(settings.ledger)
        try:
            error = connection_budget_error(
                engine, per_process=settings.ledger.pool_size + settings.ledger.pool_max_overflow,
                workers=gw.workers, replicas=gw.replicas,
            )  # fmt: skip
        finally:
            engine.dispose()
        if error is not None:
            raise ConfigError(error)
    except ConfigError as exc:
        err_console.print(f"[bold red]clawback:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None
    os.environ.update({"CLAWBACK_GATEWAY__HOST": gw.host, "CLAWBACK_GATEWAY__PORT": str(gw.port),
                       "CLAWBACK_GATEWAY__WORKERS": str(gw.workers)})  # fmt: skip
    if upstream:
        os.environ["CLAWBACK_UPSTREAM__URL"] = upstream
    if config is not None:
        os.environ[WORKER_CONFIG_ENV] = str(config.resolve())
    console.print(f"clawback gateway on http://{gw.host}:{gw.port} -> {upstream_url}  ({gw.workers} workers)")
    console.print(f"  ANTHROPIC_BASE_URL=http://{gw.host}:{gw.port}  (ledger: {settings.ledger.url})")
    run_workers("clawback.gateway.app:worker_app", gw.host, gw.port, gw.workers, http=GatewayApp.http_protocol)
