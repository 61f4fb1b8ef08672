"""The admin API: ``/admin/…``, behind ``gateway.admin_token`` (off, 404, when no token is configured).

The routes act on the stages that offer an operation (``pipeline.stage.Invalidates``, ``Reports``), so a new
stage that holds replies or counters is reachable here without a change to this module.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clawback.api.errors import error_body
from clawback.gateway.admin_auth import Handler, admin_only
from clawback.gateway.process import gateway_of
from clawback.gateway.routes import json_response
from clawback.pipeline.flags import HOLDOUT, FlagsStage
from clawback.storage.flags import MODES, FlagStore, FlagUpdate, check_update

__all__ = ["routes"]

_SELECTORS = ("key", "namespace", "tag")


@admin_only
async def cache_invalidate(request: Request) -> Response:
    """``POST /admin/cache/invalidate`` with one or more of ``key``, ``namespace``, ``tag``."""
    try:
        spec = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        spec = None
    fields = {k: spec.get(k) for k in _SELECTORS} if isinstance(spec, dict) else {}
    selectors = {k: v for k, v in fields.items() if isinstance(v, str) and v}
    if not selectors:
        return json_response(error_body("invalid_request_error", "give at least one of key, namespace, tag"), 400)
    stages = gateway_of(request).pipeline.invalidators()
    count = sum([await stage.invalidate(**selectors) for stage in stages])
    return json_response({"invalidated": count, "enabled": bool(stages)})


@admin_only
async def cache_stats(request: Request) -> Response:
    """``GET /admin/cache/stats``: each reporting stage's counters under its name (the exact cache's hits and
    misses, the planner's payback per prefix family and recent churn)."""
    return json_response({stage.name: stage.report() for stage in gateway_of(request).pipeline.reporters()})


def _flags_stage(request: Request) -> FlagsStage | None:
    return gateway_of(request).pipeline.find(FlagsStage)


def _flags_view(stage: FlagsStage) -> dict[str, Any]:
    names = [name for name, _ in stage.stages]
    stored = dict(stage.current())
    flags = {name: {**stage.flag(name).as_dict(), "stored": name in stored, "in_pipeline": name in names}
             for name in dict.fromkeys([*names, *stored, HOLDOUT])}  # fmt: skip
    return {"flags": flags, "stages": names}


async def _spec(request: Request) -> dict[str, Any]:
    try:
        spec = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError:
        spec = None
    return spec if isinstance(spec, dict) else {}


@admin_only
async def flags_list(request: Request) -> Response:
    """``GET /admin/flags``: every flag as this replica applies it, and the stages of its pipeline."""
    stage = _flags_stage(request)
    return json_response(_flags_view(stage) if stage is not None else {"flags": {}, "stages": []})


def _on_flag_store(handler: Callable[[Request, FlagsStage, FlagStore], Awaitable[Response]]) -> Handler:
    """``handler`` behind the admin token, given the pipeline's flags stage and its store; 404 without one."""

    @admin_only
    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        stage = _flags_stage(request)
        if stage is None or stage.store is None:
            return json_response(error_body("not_found_error", "this gateway has no flag store"), 404)
        return await handler(request, stage, stage.store)

    return run


@_on_flag_store
async def flags_set(request: Request, stage: FlagsStage, store: FlagStore) -> Response:
    """``POST /admin/flags/{name}`` with ``mode``, ``rollout`` (default 100), ``actor``, ``reason``."""
    spec = await _spec(request)
    name, mode, rollout = request.path_params["name"], spec.get("mode"), spec.get("rollout", 100)
    if mode not in MODES or not isinstance(rollout, int | float) or isinstance(rollout, bool):
        return json_response(error_body("invalid_request_error", f"give mode ({', '.join(MODES)}) and a numeric "
                                        "rollout (0-100)"), 400)  # fmt: skip
    update = FlagUpdate(name, mode, float(rollout))
    try:
        check_update(update)
    except ValueError as exc:
        return json_response(error_body("invalid_request_error", str(exc)), 400)
    actor, reason = str(spec.get("actor") or "admin-api"), str(spec.get("reason") or "")
    changes = await asyncio.to_thread(store.apply, [update], actor=actor, reason=reason)
    return json_response({"changes": [c.as_dict() for c in changes]})


@_on_flag_store
async def flags_history(request: Request, stage: FlagsStage, store: FlagStore) -> Response:
    """``GET /admin/flags/history[?name=…&limit=…]``: the audit, oldest first."""
    name = request.query_params.get("name") or None
    try:
        limit = max(1, min(1000, int(request.query_params.get("limit", "50"))))
    except ValueError:
        return json_response(error_body("invalid_request_error", "limit must be an integer"), 400)
    changes = await asyncio.to_thread(store.history, name, limit)
    return json_response({"changes": [c.as_dict() for c in changes]})


@_on_flag_store
async def rollback(request: Request, stage: FlagsStage, store: FlagStore) -> Response:
    """``POST /admin/rollback`` with ``stage`` (a flag, or ``all``: every stage of the pipeline and every stored
    flag but the holdout), ``actor``, ``reason``: each off, audited; what changed."""
    spec = await _spec(request)
    target = str(spec.get("stage") or "all")
    if target == "all":
        names = [n for n in dict.fromkeys([*(name for name, _ in stage.stages), *stage.current()]) if n != HOLDOUT]
    else:
        names = [target]
    actor, reason = str(spec.get("actor") or "admin-api"), str(spec.get("reason") or f"rollback {target}")
    changes = await asyncio.to_thread(store.rollback, names, actor=actor, reason=reason)
    return json_response({"changes": [c.as_dict() for c in changes]})


routes = [
    Route("/admin/cache/invalidate", cache_invalidate, methods=["POST"]),
    Route("/admin/cache/stats", cache_stats, methods=["GET"]),
    Route("/admin/flags", flags_list, methods=["GET"]),
    Route("/admin/flags/history", flags_history, methods=["GET"]),
    Route("/admin/flags/{name}", flags_set, methods=["POST"]),
    Route("/admin/rollback", rollback, methods=["POST"]),
]
