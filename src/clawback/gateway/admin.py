"""The admin API: ``/admin/…``, behind ``gateway.admin_token`` (off, 404, when no token is configured).

The routes act on the stages that offer an operation (``pipeline.stage.Invalidates``, ``Reports``), so a new
stage that holds replies or counters is reachable here without a change to this module.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clawback.api.errors import error_body
from clawback.gateway.process import gateway_of
from clawback.gateway.routes import json_response
from clawback.pipeline.flags import HOLDOUT, FlagsStage
from clawback.storage.flags import MODES, FlagStore, FlagUpdate, check_update

__all__ = ["routes"]

_SELECTORS = ("key", "namespace", "tag")


def _denied(request: Request) -> Response | None:
    """None when the request carries the admin token; 404 when no token is configured (admin API off)."""
    admin_token = gateway_of(request).settings.gateway.admin_token
    if admin_token is None:
        return json_response(error_body("not_found_error", f"{request.url.path}: the admin API is disabled "
                                        "(set gateway.admin_token)"), 404)  # fmt: skip
    sent = request.headers.get("authorization", "")
    sent = sent[7:].strip() if sent.lower().startswith("bearer ") else request.headers.get("x-admin-token", "")
    if not hmac.compare_digest(sent.encode(), admin_token.get_secret_value().encode()):
        return json_response(error_body("authentication_error", "admin API: invalid or missing admin token"), 401)
    return None


async def cache_invalidate(request: Request) -> Response:
    """``POST /admin/cache/invalidate`` with one or more of ``key``, ``namespace``, ``tag``."""
    denied = _denied(request)
    if denied is not None:
        return denied
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


async def cache_stats(request: Request) -> Response:
    """``GET /admin/cache/stats``: each reporting stage's counters under its name (the exact cache's hits and
    misses, the planner's payback per prefix family and recent churn)."""
    denied = _denied(request)
    if denied is not None:
        return denied
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


async def flags_list(request: Request) -> Response:
    """``GET /admin/flags``: every flag as this replica applies it, and the stages of its pipeline."""
    denied = _denied(request)
    if denied is not None:
        return denied
    stage = _flags_stage(request)
    return json_response(_flags_view(stage) if stage is not None else {"flags": {}, "stages": []})


def _store_of(request: Request) -> FlagStore | Response:
    stage = _flags_stage(request)
    if stage is None or stage.store is None:
        return json_response(error_body("not_found_error", "this gateway has no flag store"), 404)
    return stage.store


async def flags_set(request: Request) -> Response:
    """``POST /admin/flags/{name}`` with ``mode``, ``rollout`` (default 100), ``actor``, ``reason``."""
    denied = _denied(request)
    if denied is not None:
        return denied
    store = _store_of(request)
    if isinstance(store, Response):
        return store
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


async def flags_history(request: Request) -> Response:
    """``GET /admin/flags/history[?name=…&limit=…]``: the audit, oldest first."""
    denied = _denied(request)
    if denied is not None:
        return denied
    store = _store_of(request)
    if isinstance(store, Response):
        return store
    name = request.query_params.get("name") or None
    try:
        limit = max(1, min(1000, int(request.query_params.get("limit", "50"))))
    except ValueError:
        return json_response(error_body("invalid_request_error", "limit must be an integer"), 400)
    changes = await asyncio.to_thread(store.history, name, limit)
    return json_response({"changes": [c.as_dict() for c in changes]})


async def rollback(request: Request) -> Response:
    """``POST /admin/rollback`` with ``stage`` (a flag, or ``all``: every stage of the pipeline and every stored
    flag but the holdout), ``actor``, ``reason``: each off, audited; what changed."""
    denied = _denied(request)
    if denied is not None:
        return denied
    store = _store_of(request)
    if isinstance(store, Response):
        return store
    stage = _flags_stage(request)
    assert stage is not None
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
