"""The gateway's routes besides the two pipeline endpoints, Starlette-style: everything else under ``/v1/``
(batches, models, whatever the API adds) forwarded as is, ``HEAD /api/hello`` for Claude Code's gateway check,
``/healthz`` and ``/metrics``, and the error handlers (always an Anthropic error envelope, never a traceback)."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from clawback.api.errors import ApiError, error_body
from clawback.asgi import ClientGone, RelayResponse, read_body
from clawback.gateway.metrics import CONTENT_TYPE_LATEST
from clawback.gateway.process import gateway_of
from clawback.pipeline.context import Reply, new_request_id
from clawback.pipeline.dispatch.batches import book_batch_results

__all__ = ["BATCHES_BODY_LIMIT", "exception_handlers", "json_response", "routes"]

log = logging.getLogger("clawback.gateway")

#: The Message Batches API takes bodies up to 256 MB.
BATCHES_BODY_LIMIT = 256 * 1024 * 1024


def json_response(data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    response = Response(orjson.dumps(data), status_code=status, media_type="application/json")
    for key, value in headers or []:
        response.headers.append(key, value)
    return response


def _to_response(reply: Reply) -> Response | RelayResponse:
    if reply.stream is not None:
        return RelayResponse(reply.stream, reply.status, reply.headers)
    response = Response(reply.body or b"", status_code=reply.status)
    for key, value in reply.headers:
        response.headers.append(key, value)
    return response


async def passthrough(request: Request) -> Response | RelayResponse:
    """Anything else under /v1/: authenticate, forward unchanged, relay unchanged."""
    gateway = gateway_of(request)
    try:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]
        caller = gateway.intake.caller(headers)
        raw = await read_body(request.scope, request.receive, BATCHES_BODY_LIMIT)
        ctx = gateway.intake.context(
            caller, request_id=new_request_id(), endpoint="passthrough", method=request.method,
            path=request.url.path, query=request.url.query, headers=headers, raw=raw,
        )  # fmt: skip
        reply = await gateway.forward(ctx)
        book_batch_results(ctx, reply, gateway.price_book, [gateway.ledger.submit])
    except ApiError as exc:
        return json_response(exc.body(None), exc.status, list(exc.headers.items()))
    except ClientGone:
        return Response(status_code=499)
    if reply.body and request.url.path.startswith("/v1/messages/batches"):
        # A batch's results_url names the upstream; clients must fetch results through us (with
        # their clawback key), so the upstream's base URL becomes ours. Nothing else is touched.
        ours = str(request.base_url).rstrip("/").encode()
        reply.body = gateway.results_url.sub(lambda m: m.group(1) + ours, reply.body)
    return _to_response(reply)


async def hello(request: Request) -> Response:
    return Response(status_code=200)


async def healthz(request: Request) -> Response:
    gateway = gateway_of(request)
    stats = gateway.ledger.stats()
    healthy = stats.database_up and stats.lost == 0
    return json_response(
        {
            "status": "ok" if healthy else "degraded",
            "upstream": gateway.upstream_url,
            "ledger": {
                "database_up": stats.database_up,
                "queue_depth": stats.queue_depth,
                "written": stats.written,
                "journal_pending": stats.journal_pending,
                "lost": stats.lost,
                "pool": gateway.ledger.engine.pool.status(),
            },
            "prices_as_of": gateway.price_book.as_of,
        },
        200 if healthy else 503,
    )


async def metrics(request: Request) -> Response:
    gateway = gateway_of(request)
    extra = b"".join(stage.render_metrics() for stage in gateway.pipeline.metric_exporters())
    return Response(gateway.metrics.render() + extra, media_type=CONTENT_TYPE_LATEST)


async def not_found(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    message = "Not found" if status == 404 else ("Method not allowed" if status == 405 else "error")
    error_type = {404: "not_found_error", 405: "invalid_request_error"}.get(status, "api_error")
    return json_response(error_body(error_type, f"{request.method} {request.url.path}: {message}"), status)


async def crashed(request: Request, exc: Exception) -> Response:
    log.exception("gateway failed on %s", request.url.path)
    return json_response(error_body("api_error", "clawback gateway internal error (see the gateway log)"), 500)


routes = [
    Route("/v1/{rest:path}", passthrough, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
    Route("/api/hello", hello, methods=["GET", "HEAD"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
exception_handlers: dict[Any, Any] = {404: not_found, 405: not_found, Exception: crashed}
