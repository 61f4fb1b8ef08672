"""``clawback cache``: invalidate and inspect the response caches (exact and semantic).

By default it talks to the running gateway's admin API (``POST /admin/cache/invalidate``, ``GET
/admin/cache/stats``) with ``gateway.admin_token``: that is the only way to reach the in-memory backend, which
lives inside the gateway process. With ``--direct`` it goes straight to Redis (``exact_cache.backend: redis``),
which works while no gateway runs and reaches the entries every replica shares, and to the semantic cache's
database (``semantic_cache.store_url``), whose deletions every replica applies at its next sync.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

import httpx
import orjson
import typer
from rich.console import Console

from clawback.cli.options import ConfigOption, err_console, settings_or_exit
from clawback.config import Settings

__all__ = ["cache_app"]

cache_app = typer.Typer(no_args_is_help=True, help="Invalidate and inspect the exact response cache.")
console = Console()


def _admin(settings: Settings, gateway: str | None, token: str | None) -> tuple[str, dict[str, str]]:
    url = (gateway or f"http://{settings.gateway.host}:{settings.gateway.port}").rstrip("/")
    secret = token or (settings.gateway.admin_token.get_secret_value() if settings.gateway.admin_token else None)
    if not secret:
        err_console.print("[bold red]clawback:[/] no admin token: set gateway.admin_token or pass --admin-token")
        raise typer.Exit(2)
    return url, {"authorization": f"Bearer {secret}"}


@cache_app.command("invalidate")
def invalidate(
    key: Annotated[str | None, typer.Option(help="A cache key (the x-clawback-cache-key response header)")] = None,
    namespace: Annotated[str | None, typer.Option(help="Every entry of a namespace (default: key id)")] = None,
    tag: Annotated[str | None, typer.Option(help="Every entry stored with this x-clawback-cache-tags tag")] = None,
    gateway: Annotated[str | None, typer.Option(help="Gateway URL (default: gateway.host and gateway.port)")] = None,
    admin_token: Annotated[str | None, typer.Option(help="Admin token (default: gateway.admin_token)")] = None,
    direct: Annotated[
        bool, typer.Option(help="Go straight to Redis / the semantic store instead of the gateway")
    ] = False,
    config: ConfigOption = None,
) -> None:
    """Drop cached replies by key, namespace or tag; prints how many were dropped."""
    if not (key or namespace or tag):
        err_console.print("[bold red]clawback:[/] give --key, --namespace or --tag")
        raise typer.Exit(2)
    settings = settings_or_exit(config)
    if direct:
        shared_semantic = settings.semantic_cache.enabled and settings.semantic_cache.store_url
        if settings.exact_cache.backend != "redis" and not shared_semantic:
            err_console.print("[bold red]clawback:[/] --direct needs exact_cache.backend: redis or semantic_cache."
                              "store_url (the memory backends live inside the gateway: drop --direct)")  # fmt: skip
            raise typer.Exit(2)
        count = asyncio.run(_direct(settings, key, namespace, tag)) if settings.exact_cache.backend == "redis" else 0
        if shared_semantic:
            count += _direct_semantic(settings, key, namespace, tag)
    else:
        url, headers = _admin(settings, gateway, admin_token)
        spec = {k: v for k, v in (("key", key), ("namespace", namespace), ("tag", tag)) if v}
        try:
            response = httpx.post(f"{url}/admin/cache/invalidate", json=spec, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            err_console.print(f"[bold red]clawback:[/] cannot reach the gateway at {url}: {exc}")
            raise typer.Exit(1) from None
        if response.status_code != 200:
            err_console.print(f"[bold red]clawback:[/] {response.status_code}: {response.text}", highlight=False)
            raise typer.Exit(1)
        count = int(response.json()["invalidated"])
    console.print(f"invalidated {count}")


async def _direct(settings: Settings, key: str | None, namespace: str | None, tag: str | None) -> int:
    from clawback.storage.response_cache import RedisResponseCache

    cache = RedisResponseCache(settings.exact_cache.redis_url, max_bytes=settings.exact_cache.max_bytes,
                               prefix=settings.exact_cache.redis_prefix, timeout_s=2.0)  # fmt: skip
    try:
        return await cache.invalidate(key=key, namespace=namespace, tag=tag)
    finally:
        await cache.aclose()


def _direct_semantic(settings: Settings, key: str | None, namespace: str | None, tag: str | None) -> int:
    """The semantic cache's shared entries, straight in its database; every replica drops them at its next sync."""
    from clawback.storage.semantic_store import SqlSemanticPersistence

    assert settings.semantic_cache.store_url is not None
    store = SqlSemanticPersistence(settings.semantic_cache.store_url)
    try:
        return store.delete_matching(key=key, namespace=namespace, tag=tag)
    finally:
        store.close()


@cache_app.command("stats")
def stats(
    gateway: Annotated[str | None, typer.Option(help="Gateway URL (default: gateway.host and gateway.port)")] = None,
    admin_token: Annotated[str | None, typer.Option(help="Admin token (default: gateway.admin_token)")] = None,
    config: ConfigOption = None,
) -> None:
    """Exact-cache counters, prompt-cache payback per prefix family and recent prefix churn, as JSON."""
    url, headers = _admin(settings_or_exit(config), gateway, admin_token)
    response = httpx.get(f"{url}/admin/cache/stats", headers=headers, timeout=10)
    if response.status_code != 200:
        err_console.print(f"[bold red]clawback:[/] {response.status_code}: {response.text}", highlight=False)
        raise typer.Exit(1)
    print(orjson.dumps(response.json(), option=orjson.OPT_INDENT_2).decode())
