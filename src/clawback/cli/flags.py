"""``clawback flags list|set|history`` and ``clawback rollback [STAGE|all]``: the run-time switches of each stage.

They write the flag store in the ledger's database directly (``ledger.url``: the database every replica reads),
so they work with no gateway running and reach every replica: at once through Redis when ``flags.redis_url`` is
set, within ``flags.refresh_s`` otherwise. Every change is audited with ``--actor`` (default: user@host) and
``--reason``. The admin API offers the same (``/admin/flags``, ``/admin/rollback``).
"""

from __future__ import annotations

import getpass
import socket
from typing import Annotated, Any

import typer
from rich.console import Console

from clawback.cli.options import ConfigOption, err_console, settings_or_exit
from clawback.config import FlagMode, Settings

__all__ = ["flags_app", "rollback_command"]

console = Console()
flags_app = typer.Typer(no_args_is_help=True, help="Per-stage modes (off/shadow/on), rollout and holdout, audited.")

ActorOption = Annotated[str | None, typer.Option(help="Who makes the change, for the audit (default: user@host)")]
ReasonOption = Annotated[str, typer.Option(help="Why, for the audit")]


def _actor(actor: str | None) -> str:
    return actor or f"{getpass.getuser()}@{socket.gethostname()}"


def _store(settings: Settings) -> Any:
    from clawback.storage.flags import FlagStore
    from clawback.storage.migrate import migrate

    migrate(settings.ledger.url)
    flags = settings.flags
    return FlagStore(settings.ledger.url, refresh_s=flags.refresh_s, redis_url=flags.redis_url,
                     channel=flags.redis_channel)  # fmt: skip


def flagged_stages() -> set[str]:
    """The names of the stages ``pipeline/build.py`` builds that declare ``modes`` (opted in to flags)."""
    from clawback.pipeline import build

    names: set[str] = set()
    for obj in vars(build).values():
        name = getattr(obj, "name", None)
        if isinstance(obj, type) and isinstance(name, str) and getattr(obj, "modes", None):
            names.add(name)
    return names


def known_flags(settings: Settings, stored: dict[str, Any]) -> list[str]:
    """Every optimization the configuration has (a settings section with ``enabled``) whose stage is flagged, then
    the stored flags."""
    from clawback.bench.savings import optimization_names

    flagged = flagged_stages()
    return list(dict.fromkeys([*(n for n in optimization_names() if n in flagged), *stored]))


def _enabled(settings: Settings, name: str) -> bool:
    """Whether the configuration builds stage ``name`` (its section's ``enabled``; pruning: or an override)."""
    section: Any = settings
    for part in name.split("."):
        section = getattr(section, part, None)
    if section is None:
        return True  # a flag this configuration has no section for: the stage decides
    return bool(getattr(section, "enabled", True) or getattr(section, "overrides", None))


@flags_app.command("list")
def flags_list(config: ConfigOption = None) -> None:
    """Each flag: mode, rollout, who set it, when and why (unset flags: the configured start)."""
    from rich.table import Table

    from clawback.pipeline.flags import HOLDOUT, FlagsStage

    settings = settings_or_exit(config)
    store = _store(settings)
    try:
        stored = store.reload()
        start = FlagsStage(settings.flags)
        table = Table("flag", "mode", "rollout %", "set by", "at", "reason")
        for name in [*known_flags(settings, stored), HOLDOUT]:
            state = stored.get(name)
            if state is None:
                state = start.initial(name)
                built = name == HOLDOUT or _enabled(settings, name)
                mode = state.mode if built else "off (not enabled in the configuration)"
                table.add_row(name, mode, f"{state.rollout:g}", "(configured start)", "", "")
            else:
                table.add_row(name, state.mode, f"{state.rollout:g}", state.updated_by,
                              f"{state.updated_at:%Y-%m-%d %H:%M:%S}", state.reason)  # fmt: skip
        console.print(table)
    finally:
        store.close()


@flags_app.command("set")
def flags_set(
    name: Annotated[str, typer.Argument(help="A stage (pruning, exact_cache, prompt_cache, ...) or holdout")],
    mode: Annotated[str, typer.Argument(help="off, shadow or on (holdout: on with --rollout = its size)")],
    rollout: Annotated[float, typer.Option(help="Percent of conversations the mode applies to (the rest: off)")] = 100,
    actor: ActorOption = None,
    reason: ReasonOption = "",
    config: ConfigOption = None,
) -> None:
    """Set a flag; every replica applies it to new requests within seconds (requests in flight keep theirs)."""
    from clawback.storage.flags import MODES, FlagUpdate

    if mode not in MODES:
        err_console.print(f"[bold red]clawback:[/] mode must be one of {', '.join(MODES)}, got {mode!r}")
        raise typer.Exit(2)
    if not 0 <= rollout <= 100:
        err_console.print(f"[bold red]clawback:[/] --rollout is a percentage (0-100), got {rollout:g}")
        raise typer.Exit(2)
    settings = settings_or_exit(config)
    store = _store(settings)
    try:
        flag_mode: FlagMode = mode  # checked against MODES above
        changes = store.apply([FlagUpdate(name, flag_mode, rollout)], actor=_actor(actor), reason=reason)
    finally:
        store.close()
    console.print("\n".join(c.describe() for c in changes) or f"{name}: unchanged ({mode} {rollout:g}%)",
                  highlight=False)  # fmt: skip


@flags_app.command("history")
def flags_history(
    name: Annotated[str | None, typer.Argument(help="One flag (default: all)")] = None,
    limit: Annotated[int, typer.Option(help="Newest N changes", min=1)] = 50,
    config: ConfigOption = None,
) -> None:
    """The audit: every change, who made it, when and why."""
    from rich.table import Table

    store = _store(settings_or_exit(config))
    try:
        changes = store.history(name, limit)
    finally:
        store.close()
    table = Table("at", "flag", "change", "actor", "reason")
    for change in changes:
        before = "unset" if change.previous_mode is None else f"{change.previous_mode} {change.previous_rollout:g}%"
        table.add_row(f"{change.at:%Y-%m-%d %H:%M:%S}", change.name, f"{before} -> {change.mode} {change.rollout:g}%",
                      change.actor, change.reason)  # fmt: skip
    console.print(table)


def rollback_command(
    stage: Annotated[str, typer.Argument(help="A stage's flag, or all")] = "all",
    actor: ActorOption = None,
    reason: ReasonOption = "",
    config: ConfigOption = None,
) -> None:
    """Turn optimizations off everywhere at once (audited; requests in flight finish as they started).

    ``clawback flags set STAGE on --rollout 10`` brings one back."""
    from clawback.pipeline.flags import HOLDOUT

    settings = settings_or_exit(config)
    store = _store(settings)
    try:
        stored = store.reload()
        names = [n for n in known_flags(settings, stored) if n != HOLDOUT] if stage == "all" else [stage]
        changes = store.rollback(names, actor=_actor(actor), reason=reason or f"rollback {stage}")
    finally:
        store.close()
    for change in changes:
        console.print(f"rolled back {change.describe()}", highlight=False)
    if not changes:
        console.print(f"nothing to roll back: {', '.join(names)} already off", highlight=False)
