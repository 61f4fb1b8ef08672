"""The admin API: ``/admin/…``, behind ``gateway.admin_token`` (off, 404, when no token is configured).

The routes act on the stages that offer an operation (``pipeline.stage.Invalidates``, ``Reports``), so a new
stage that holds replies or counters is reachable here without a change to this module.
"""

from __future__ import annotations

import hmac

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clawback.api.errors import error_body
from clawback.gateway.process import gateway_of
from clawback.gateway.routes import json_response

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


routes = [
    Route("/admin/cache/invalidate", cache_invalidate, methods=["POST"]),
    Route("/admin/cache/stats", cache_stats, methods=["GET"]),
]
