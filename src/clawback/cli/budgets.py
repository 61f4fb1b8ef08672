"""``clawback budgets create|list|show|set|delete|override``: token budgets, through the gateway's admin API.

The commands talk to a running gateway (``--url``, default the configured ``gateway.host``/``port``) with the
admin token (``--admin-token``, default ``gateway.admin_token``): the counters may live in that gateway's
process (embedded mode), so the gateway is the one place that knows usage, reservations and drift.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.table import Table

from clawback.cli.bench import wide_console
from clawback.cli.options import ConfigOption, err_console, settings_or_exit

__all__ = ["budgets_app"]

console = wide_console()
budgets_app = typer.Typer(
    no_args_is_help=True, help="Token budgets: limits per key/team/user/feature/conversation/org."
)

UrlOption = Annotated[str | None, typer.Option("--url", help="The gateway (default: gateway.host and gateway.port)")]
TokenOption = Annotated[
    str | None,
    typer.Option("--admin-token", envvar="CLAWBACK_ADMIN_TOKEN", help="Default: gateway.admin_token"),
]
ActorOption = Annotated[str, typer.Option("--actor", envvar="USER", help="Who you are, for the audit trail")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the raw JSON")]


def _client(config: Path | None, url: str | None, token: str | None, actor: str = "cli") -> httpx.Client:
    settings = settings_or_exit(config)
    if token is None and settings.gateway.admin_token is not None:
        token = settings.gateway.admin_token.get_secret_value()
    if not token:
        err_console.print("[bold red]clawback:[/] no admin token: pass --admin-token or set gateway.admin_token")
        raise typer.Exit(2)
    base = url or f"http://{settings.gateway.host}:{settings.gateway.port}"
    return httpx.Client(base_url=base, timeout=30,
                        headers={"authorization": f"Bearer {token}", "x-clawback-actor": actor})  # fmt: skip


def _call(client: httpx.Client, method: str, path: str, body: dict[str, Any] | None = None,
          params: dict[str, str] | None = None) -> Any:  # fmt: skip
    try:
        response = client.request(method, path, json=body, params=params)
    except httpx.HTTPError as exc:
        err_console.print(f"[bold red]clawback:[/] cannot reach the gateway at {client.base_url}: {exc}")
        raise typer.Exit(1) from None
    data = response.json() if response.content else {}
    if response.status_code >= 400:
        message = data.get("error", {}).get("message") if isinstance(data, dict) else response.text
        err_console.print(f"[bold red]clawback:[/] {message or response.text}", highlight=False)
        raise typer.Exit(1)
    return data


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d)?\s*$")


def _seconds(text: str) -> float:
    match = _DURATION.match(text)
    if match is None:
        raise typer.BadParameter(f"{text!r}: give a duration such as 90s, 30m, 2h or 1d")
    unit = {"s": 1, None: 1, "m": 60, "min": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * unit


def _limits(budget: dict[str, Any]) -> str:
    parts = []
    if budget.get("limit_usd") is not None:
        parts.append(f"${Decimal(budget['limit_usd']):,}")
    if budget.get("limit_tokens") is not None:
        parts.append(f"{budget['limit_tokens']:,} tokens")
    return " + ".join(parts) or "no limit"


@budgets_app.command("create")
def budgets_create(
    name: Annotated[str, typer.Argument(help="A unique name")],
    scope: Annotated[str, typer.Option(help="key, team, user, feature, conversation or org")] = "org",
    value: Annotated[str | None, typer.Option("--value", help="Which key/team/...; * = each one separately")] = None,
    usd: Annotated[str | None, typer.Option("--usd", help="Dollar limit per window")] = None,
    tokens: Annotated[int | None, typer.Option("--tokens", help="Token limit per window")] = None,
    window: Annotated[str, typer.Option(help="day, week, month or rolling")] = "month",
    rolling: Annotated[str | None, typer.Option("--rolling", help="Length of a rolling window (e.g. 1h)")] = None,
    timezone: Annotated[str | None, typer.Option("--tz", help="Calendar windows' time zone")] = None,
    threshold: Annotated[list[int] | None, typer.Option("--threshold", help="Alert at % (repeat)")] = None,
    forecast: Annotated[bool, typer.Option(help="Alert on the run rate")] = True,
    action: Annotated[str, typer.Option(help="refuse or downgrade")] = "refuse",
    downgrade_model: Annotated[str | None, typer.Option(help="action=downgrade: a cheaper model")] = None,
    min_max_tokens: Annotated[int | None, typer.Option(help="action=downgrade: lower max_tokens to this")] = None,
    on_store_error: Annotated[str, typer.Option(help="open or closed when the counters are unreachable")] = "closed",
    url: UrlOption = None,
    admin_token: TokenOption = None,
    actor: ActorOption = "cli",
    config: ConfigOption = None,
) -> None:
    """Create a budget."""
    spec: dict[str, Any] = {"name": name, "scope": scope, "scope_value": value, "limit_usd": usd,
                            "limit_tokens": tokens, "window": "rolling" if rolling else window,
                            "rolling_s": int(_seconds(rolling)) if rolling else None, "timezone": timezone,
                            "forecast": forecast, "action": action, "downgrade_model": downgrade_model,
                            "min_max_tokens": min_max_tokens, "on_store_error": on_store_error}  # fmt: skip
    if threshold:
        spec["thresholds"] = threshold
    with _client(config, url, admin_token, actor) as client:
        budget = _call(client, "POST", "/admin/budgets", spec)
    console.print(f"created {budget['id']} {budget['name']}: {_limits(budget)} per {budget['window']}")


@budgets_app.command("list")
def budgets_list(url: UrlOption = None, admin_token: TokenOption = None, json_output: JsonOption = False,
                 config: ConfigOption = None) -> None:  # fmt: skip
    """List budgets."""
    with _client(config, url, admin_token) as client:
        data = _call(client, "GET", "/admin/budgets")
    if json_output:
        print(orjson.dumps(data).decode())
        return
    table = Table("id", "name", "scope", "limit", "window", "thresholds", "action", "store down", "overrides")
    for b in data["budgets"]:
        table.add_row(b["id"], b["name"], b["scope"] + (f" {b['scope_value']}" if b["scope_value"] else ""),
                      _limits(b), b["window"] if b["window"] != "rolling" else f"rolling {b['rolling_s']} s",
                      ",".join(str(t) for t in b["thresholds"]), b["action"], b["on_store_error"],
                      str(len(b["overrides"])))  # fmt: skip
    console.print(table)


@budgets_app.command("show")
def budgets_show(ref: Annotated[str, typer.Argument(help="Id or name")], url: UrlOption = None,
                 admin_token: TokenOption = None, json_output: JsonOption = False,
                 config: ConfigOption = None) -> None:  # fmt: skip
    """A budget's usage, reserved and remaining per window, its drift from the ledger, overrides and audit trail."""
    with _client(config, url, admin_token) as client:
        data = _call(client, "GET", f"/admin/budgets/{ref}")
    if json_output:
        print(orjson.dumps(data).decode())
        return
    console.print(f"[bold]{data['name']}[/] ({data['id']}): {_limits(data)}, {data['scope']} "
                  f"{data['scope_value'] or ''}, action {data['action']}, fails {data['on_store_error']}")  # fmt: skip
    table = Table("scope value", "window", "spent", "reserved", "remaining", "ledger", "drift", "resets")
    for u in data["usage"]:
        remaining = f"${u['remaining_usd']}" if u["remaining_usd"] is not None else "-"
        if u["remaining_tokens"] is not None:
            remaining += f" / {u['remaining_tokens']:,} tok"
        table.add_row(u["scope_value"], u["window"], f"${u['spent_usd']} / {u['spent_tokens']:,} tok",
                      f"${u['reserved_usd']} ({u['reservations']})", remaining, f"${u['ledger_usd']}",
                      f"${u['drift_usd']}", u["resets_at"])  # fmt: skip
    console.print(table)
    for o in data["overrides"]:
        what = "lifted" if o["lifted"] else f"limit ${o['limit_usd']} / {o['limit_tokens']} tokens"
        console.print(f"override {o['id']}: {what} until {o['expires_at']} by {o['actor']}: {o['reason']}")
    for a in data["audit"]:
        console.print(f"{a['at']}  {a['actor']}  {a['action']}  {a['reason'] or ''}", highlight=False)


@budgets_app.command("set")
def budgets_set(
    ref: Annotated[str, typer.Argument(help="Id or name")],
    usd: Annotated[str | None, typer.Option("--usd")] = None,
    tokens: Annotated[int | None, typer.Option("--tokens")] = None,
    threshold: Annotated[list[int] | None, typer.Option("--threshold", help="Replaces the thresholds")] = None,
    action: Annotated[str | None, typer.Option()] = None,
    on_store_error: Annotated[str | None, typer.Option()] = None,
    clear: Annotated[list[str] | None, typer.Option("--clear", help="limit_usd, limit_tokens, ...")] = None,
    reason: Annotated[str | None, typer.Option(help="Why (audit trail)")] = None,
    url: UrlOption = None,
    admin_token: TokenOption = None,
    actor: ActorOption = "cli",
    config: ConfigOption = None,
) -> None:
    """Change a budget (audited)."""
    patch = {k: v for k, v in {"limit_usd": usd, "limit_tokens": tokens, "thresholds": threshold, "action": action,
                               "on_store_error": on_store_error, "clear": clear, "reason": reason}.items()
             if v is not None}  # fmt: skip
    with _client(config, url, admin_token, actor) as client:
        budget = _call(client, "PATCH", f"/admin/budgets/{ref}", patch)
    console.print(f"updated {budget['id']} {budget['name']}: {_limits(budget)}")


@budgets_app.command("delete")
def budgets_delete(ref: Annotated[str, typer.Argument(help="Id or name")],
                   reason: Annotated[str | None, typer.Option(help="Why (audit trail)")] = None,
                   url: UrlOption = None, admin_token: TokenOption = None, actor: ActorOption = "cli",
                   config: ConfigOption = None) -> None:  # fmt: skip
    """Delete a budget (its audit trail stays)."""
    with _client(config, url, admin_token, actor) as client:
        _call(client, "DELETE", f"/admin/budgets/{ref}", params={"reason": reason} if reason else None)
    console.print(f"deleted {ref}")


@budgets_app.command("override")
def budgets_override(
    ref: Annotated[str, typer.Argument(help="Id or name")],
    duration: Annotated[str, typer.Option("--for", help="How long: 90s, 30m, 2h, 1d")],
    reason: Annotated[str, typer.Option(help="Why (required; audit trail)")],
    usd: Annotated[str | None, typer.Option("--usd", help="The raised dollar limit")] = None,
    tokens: Annotated[int | None, typer.Option("--tokens", help="The raised token limit")] = None,
    lift: Annotated[bool, typer.Option("--lift", help="No limit at all for the duration")] = False,
    url: UrlOption = None,
    admin_token: TokenOption = None,
    actor: ActorOption = "cli",
    config: ConfigOption = None,
) -> None:
    """Emergency override: raise or lift a limit for a bounded time, with a reason (audited, expires on its own)."""
    body = {"limit_usd": usd, "limit_tokens": tokens, "lift": lift, "duration_s": _seconds(duration), "reason": reason}
    with _client(config, url, admin_token, actor) as client:
        made = _call(client, "POST", f"/admin/budgets/{ref}/override", body)
    what = "lifted" if made["lifted"] else f"raised to {_limits(made)}"
    console.print(f"override {made['id']} on {ref}: {what} until {made['expires_at']}")
