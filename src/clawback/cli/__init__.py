"""The ``clawback`` command: one module per command group, put together here.

A new group is a module of its own in this package (a ``typer.Typer`` or a plain function), registered below.
Modules import what they need lazily where start-up would otherwise pay for it (``serve`` imports the gateway
only when it runs).
"""

from __future__ import annotations

import typer

from clawback.cli.bench import bench_app
from clawback.cli.budgets import budgets_app
from clawback.cli.cache import cache_app
from clawback.cli.dashboard import dashboard
from clawback.cli.demo import demo
from clawback.cli.eval import eval_app
from clawback.cli.eval_semantic import eval_semantic  # registers ``clawback eval semantic`` on eval_app
from clawback.cli.flags import flags_app, rollback_command
from clawback.cli.health import health, validate_performance
from clawback.cli.keys import keys_app
from clawback.cli.pricing import pricing_app
from clawback.cli.report import report
from clawback.cli.servers import serve, simulate, version
from clawback.cli.whatif import whatif_command

__all__ = ["app", "eval_semantic"]

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Cut the Claude API bill and prove it.")
app.command()(version)
app.command()(simulate)
app.command()(serve)
app.add_typer(keys_app, name="keys")
app.add_typer(budgets_app, name="budgets")
app.add_typer(pricing_app, name="pricing")
app.add_typer(cache_app, name="cache")
app.add_typer(bench_app, name="bench")
app.add_typer(eval_app, name="eval")
app.command("whatif")(whatif_command)
app.command()(demo)
app.add_typer(flags_app, name="flags")
app.command("rollback")(rollback_command)
app.command()(dashboard)
app.command()(report)
app.command()(health)
app.command("validate-performance")(validate_performance)
