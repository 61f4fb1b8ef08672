"""``/admin/budgets``: the budget admin API (behind ``gateway.admin_token``), which ``clawback budgets`` calls.

``GET /admin/budgets`` lists; ``POST`` creates (a ``BudgetSpec``); ``GET /admin/budgets/{id or name}`` shows
the definition, the current window's spent / reserved / remaining per scope value with the ledger's figure
and the drift, the audit trail and the alerts raised; ``PATCH`` changes (a ``BudgetPatch``); ``DELETE``
removes; ``POST …/override`` adds an emergency override (an ``OverrideSpec``); ``POST /admin/budgets:reconcile``
compares every counter with the ledger now. The actor recorded in the audit trail is the ``x-clawback-actor``
header (``admin`` when absent). Bad input is a 400 ``invalid_request_error`` naming the field.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clawback.api.errors import error_body
from clawback.gateway.admin_auth import Handler, denied
from clawback.gateway.process import gateway_of
from clawback.gateway.routes import json_response
from clawback.pipeline.budget import BudgetStage
from clawback.storage.budgets import BudgetPatch, BudgetSpec, OverrideSpec

__all__ = ["routes"]

M = TypeVar("M", bound=BaseModel)


def _fail(error_type: str, message: str, status: int) -> Response:
    return json_response(error_body(error_type, message), status)


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


async def _parse(request: Request, model: type[M]) -> M | Response:
    try:
        data = orjson.loads(await request.body() or b"{}")
    except orjson.JSONDecodeError as exc:
        return _fail("invalid_request_error", f"the body is not valid JSON: {exc}", 400)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return _fail("invalid_request_error", _validation_message(exc), 400)


def _actor(request: Request) -> str:
    return request.headers.get("x-clawback-actor") or "admin"


def guarded(handler: Callable[[Request, BudgetStage], Awaitable[Response]]) -> Handler:
    """Behind the admin token (``gateway.admin_auth.denied``), on the pipeline's budget stage."""

    async def run(request: Request) -> Response:
        refused = denied(request)
        if refused is not None:
            return refused
        stage = gateway_of(request).pipeline.find(BudgetStage)
        if stage is None:
            return _fail("not_found_error", "budgets are disabled on this gateway (budgets.enforce=false)", 404)
        return await handler(request, stage)

    return run


async def listing(request: Request, stage: BudgetStage) -> Response:
    budgets = await asyncio.to_thread(stage.store.budgets)
    return json_response({"budgets": [b.to_json() for b in budgets]})


async def create(request: Request, stage: BudgetStage) -> Response:
    spec = await _parse(request, BudgetSpec)
    if isinstance(spec, Response):
        return spec
    try:
        budget = await asyncio.to_thread(stage.store.create, spec, _actor(request))
    except IntegrityError:
        return _fail("conflict_error", f"a budget named {spec.name!r} already exists", 409)
    stage.definitions_changed()
    return json_response(budget.to_json(), 201)


async def show(request: Request, stage: BudgetStage) -> Response:
    budget = await asyncio.to_thread(stage.store.get, request.path_params["ref"])
    if budget is None:
        return _fail("not_found_error", f"no budget {request.path_params['ref']!r}", 404)
    usage = await stage.reconcile([budget])
    audit = await asyncio.to_thread(stage.store.audit, budget.id)
    alerts = await asyncio.to_thread(stage.store.alerts, budget.id)
    return json_response({**budget.to_json(), "usage": usage, "audit": [a.to_json() for a in audit], "alerts": alerts})


async def change(request: Request, stage: BudgetStage) -> Response:
    patch = await _parse(request, BudgetPatch)
    if isinstance(patch, Response):
        return patch
    try:
        budget = await asyncio.to_thread(stage.store.update, request.path_params["ref"], patch, _actor(request))
    except ValidationError as exc:
        return _fail("invalid_request_error", _validation_message(exc), 400)
    if budget is None:
        return _fail("not_found_error", f"no budget {request.path_params['ref']!r}", 404)
    stage.definitions_changed()
    return json_response(budget.to_json())


async def remove(request: Request, stage: BudgetStage) -> Response:
    reason = request.query_params.get("reason")
    if not await asyncio.to_thread(stage.store.delete, request.path_params["ref"], _actor(request), reason):
        return _fail("not_found_error", f"no budget {request.path_params['ref']!r}", 404)
    stage.definitions_changed()
    return json_response({"deleted": request.path_params["ref"]})


async def override(request: Request, stage: BudgetStage) -> Response:
    spec = await _parse(request, OverrideSpec)
    if isinstance(spec, Response):
        return spec
    made = await asyncio.to_thread(stage.store.override, request.path_params["ref"], spec, _actor(request))
    if made is None:
        return _fail("not_found_error", f"no budget {request.path_params['ref']!r}", 404)
    stage.definitions_changed()
    return json_response(made.to_json(), 201)


async def reconcile(request: Request, stage: BudgetStage) -> Response:
    return json_response({"reconciliation": await stage.reconcile()})


routes = [
    Route("/admin/budgets", guarded(listing), methods=["GET"]),
    Route("/admin/budgets", guarded(create), methods=["POST"]),
    Route("/admin/budgets:reconcile", guarded(reconcile), methods=["POST"]),
    Route("/admin/budgets/{ref}", guarded(show), methods=["GET"]),
    Route("/admin/budgets/{ref}", guarded(change), methods=["PATCH"]),
    Route("/admin/budgets/{ref}", guarded(remove), methods=["DELETE"]),
    Route("/admin/budgets/{ref}/override", guarded(override), methods=["POST"]),
]
