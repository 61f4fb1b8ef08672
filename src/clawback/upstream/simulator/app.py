"""The simulator's HTTP face: the Anthropic API's endpoints, headers and error envelopes.

Endpoints: ``POST /v1/messages`` (JSON and SSE), ``POST /v1/messages/count_tokens``, ``GET /v1/models``
(and ``/v1/models/{id}``), the Message Batches endpoints, plus ``/_simulator/*`` for tests: what was
received (raw, for forwarding checks), what was billed, totals, and a reset.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from clawback.api.errors import (
    ApiError,
    AuthenticationError,
    NotFoundError,
    ServerError,
    error_body,
    error_from_status,
)
from clawback.api.messages import parse_json_body
from clawback.asgi import ClientGone, RelayResponse, read_body, send_response
from clawback.config import SimulatorSettings
from clawback.pricing import PriceBook
from clawback.upstream.simulator.batches import BatchStore
from clawback.upstream.simulator.billing import ReceivedRequest
from clawback.upstream.simulator.engine import FAULT_HEADER, SimulatedAPI, count_tokens

__all__ = ["SimulatorApp", "create_simulator_app"]

log = logging.getLogger("clawback.simulator")

MESSAGES_BODY_LIMIT = 32 * 1024 * 1024
BATCHES_BODY_LIMIT = 256 * 1024 * 1024


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status_code=status, headers=headers, media_type="application/json")


def _error(exc: ApiError, request_id: str | None = None) -> Response:
    headers = dict(exc.headers)
    request_id = headers.get("request-id") or request_id
    if request_id:
        headers["request-id"] = request_id
    return _json(exc.body(request_id), exc.status, headers)


def _workspace(headers: Mapping[str, str], api: SimulatedAPI) -> str:
    """The caller's key stands for its workspace: caches and rate limits are per workspace."""
    key = headers.get("x-api-key")
    if not key:
        auth = headers.get("authorization", "")
        key = auth[7:] if auth.lower().startswith("bearer ") else ""
    if not key:
        raise AuthenticationError("x-api-key header is required")
    if api.settings.api_keys and key not in api.settings.api_keys:
        raise AuthenticationError("invalid x-api-key")
    return key


async def _body(request: Request, api: SimulatedAPI, limit: int) -> dict[str, Any]:
    raw = await read_body(request.scope, request.receive, limit)
    _remember(api, request.state.request_id, request.scope, raw)
    return parse_json_body(raw)


def _remember(api: SimulatedAPI, request_id: str, scope: Scope, raw: bytes) -> None:
    """Keep the request as it arrived, for byte-for-byte forwarding checks."""
    api.log.received.append(
        ReceivedRequest(
            request_id,
            scope["method"],
            scope["path"],
            scope["query_string"].decode("latin-1"),
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]],
            raw.decode("utf-8", "replace"),
        )
    )


class MessagesEndpoint:
    """``POST /v1/messages`` as a plain ASGI app: the path every benchmark loads, so no framework on it."""

    def __init__(self, api: SimulatedAPI) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = self.api
        request_id = api.new_id("req_")
        try:
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            workspace = _workspace(headers, api)
            raw = await read_body(scope, receive, MESSAGES_BODY_LIMIT)
            _remember(api, request_id, scope, raw)
            body = parse_json_body(raw)
            turn = api.prepare(body, workspace=workspace, fault=headers.get(FAULT_HEADER), request_id=request_id)
            try:
                if body.get("stream"):
                    stream_headers = [*turn.headers.items(), ("content-type", "text/event-stream"),
                                      ("cache-control", "no-cache")]  # fmt: skip
                    await RelayResponse(api.stream_chunks(turn), 200, stream_headers)(scope, receive, send)
                    return
                message = await api.complete(turn)
                json_headers = [*turn.headers.items(), ("content-type", "application/json")]
                if turn.disconnect:
                    await _send_then_drop(send, json_headers, orjson.dumps(message))
                await send_response(send, 200, json_headers, orjson.dumps(message))
                return
            finally:
                api.leave(turn)
        except ApiError as exc:
            error: ApiError = exc
        except (ClientGone, ConnectionDropped) as exc:
            if isinstance(exc, ConnectionDropped):
                raise
            return
        except Exception:  # never a traceback to the client
            log.exception("simulator failed on /v1/messages")
            error = ServerError("Internal server error")
        error_headers = {**error.headers, "content-type": "application/json"}
        error_headers.setdefault("request-id", request_id)
        await send_response(send, error.status, error_headers.items(), error.json_bytes(error_headers["request-id"]))


class ConnectionDropped(Exception):
    """Raised after a partial reply: uvicorn then closes the connection, which is the fault wanted."""


class _QuietDrops(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


async def _send_then_drop(send: Send, headers: list[tuple[str, str]], body: bytes) -> None:
    """Half a reply, then the connection goes: the client has the headers (and the request id) but no answer."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": 200, "headers": raw})
    await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
    raise ConnectionDropped


class SimulatorApp:
    """The simulator's ASGI app: the messages fast path first, everything else through Starlette."""

    def __init__(self, api: SimulatedAPI, router: Starlette) -> None:
        self.api = api
        self.router = router
        self.messages = MessagesEndpoint(api)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == "/v1/messages":
            await self.messages(scope, receive, send)
            return
        await self.router(scope, receive, send)


def create_simulator_app(
    settings: SimulatorSettings | None = None, price_book: PriceBook | None = None
) -> SimulatorApp:
    api = SimulatedAPI(settings or SimulatorSettings(), price_book)
    uvicorn_log = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _QuietDrops) for f in uvicorn_log.filters):
        uvicorn_log.addFilter(_QuietDrops())
    batches = BatchStore(api, clock=api.clock)

    def base_url(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    def endpoint(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            request.state.request_id = api.new_id("req_")
            try:
                return await handler(request)
            except ApiError as exc:
                return _error(exc, getattr(request.state, "request_id", None))
            except Exception:  # never a traceback to the client
                log.exception("simulator failed on %s", request.url.path)
                request_id = request.state.request_id
                return _json(
                    error_body("api_error", "Internal server error", request_id), 500, {"request-id": request_id}
                )

        return wrapped

    @endpoint
    async def tokens(request: Request) -> Response:
        _workspace(request.headers, api)
        body = await _body(request, api, MESSAGES_BODY_LIMIT)
        return _json(count_tokens(body, api), headers={"request-id": request.state.request_id})

    @endpoint
    async def models(request: Request) -> Response:
        _workspace(request.headers, api)
        rows = [
            {
                "type": "model",
                "id": price.model,
                "display_name": price.model.replace("-", " ").title(),
                "created_at": f"{price.as_of}T00:00:00Z",
            }
            for price in api.price_book.models()
        ]
        after, before = request.query_params.get("after_id"), request.query_params.get("before_id")
        ids = [r["id"] for r in rows]
        if after in ids:
            rows = rows[ids.index(after) + 1 :]
        elif before in ids:
            rows = rows[: ids.index(before)]
        limit = int(request.query_params.get("limit", "20") or 20)
        page = rows[: max(1, min(limit, 1000))]
        return _json(
            {
                "data": page,
                "has_more": len(rows) > len(page),
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
            }
        )

    @endpoint
    async def model(request: Request) -> Response:
        _workspace(request.headers, api)
        model_id = request.path_params["model_id"]
        if not api.price_book.is_known(model_id):
            raise NotFoundError(f"model: {model_id}")
        price = api.price_book.get(model_id)
        return _json(
            {"type": "model", "id": price.model, "display_name": price.model, "created_at": f"{price.as_of}T00:00:00Z"}
        )

    @endpoint
    async def batch_create(request: Request) -> Response:
        workspace = _workspace(request.headers, api)
        body = await _body(request, api, BATCHES_BODY_LIMIT)
        return _json(batches.create(body, workspace))

    @endpoint
    async def batch_list(request: Request) -> Response:
        q = request.query_params
        return _json(
            batches.list_batches(
                _workspace(request.headers, api),
                base_url(request),
                int(q.get("limit", "20") or 20),
                q.get("after_id"),
                q.get("before_id"),
            )
        )

    @endpoint
    async def batch_get(request: Request) -> Response:
        return _json(
            batches.retrieve(request.path_params["batch_id"], _workspace(request.headers, api), base_url(request))
        )

    @endpoint
    async def batch_cancel(request: Request) -> Response:
        return _json(
            batches.cancel(request.path_params["batch_id"], _workspace(request.headers, api), base_url(request))
        )

    @endpoint
    async def batch_delete(request: Request) -> Response:
        return _json(batches.delete(request.path_params["batch_id"], _workspace(request.headers, api)))

    @endpoint
    async def batch_results(request: Request) -> Response:
        rows = batches.results(request.path_params["batch_id"], _workspace(request.headers, api))
        return Response(b"".join(orjson.dumps(r) + b"\n" for r in rows), media_type="application/binary")

    async def billed(request: Request) -> Response:
        return _json([r.to_json() for r in api.log.billed])

    async def received(request: Request) -> Response:
        return _json([_received(r) for r in api.log.received])

    async def totals(request: Request) -> Response:
        return _json({**api.log.totals(), "peak_concurrent_requests": api.peak_active,
                      "busy_request_seconds": round(api.active_seconds, 3)})  # fmt: skip

    async def advance_clock(request: Request) -> Response:
        seconds = orjson.loads(await request.body() or b"{}").get("advance_s", 0)
        api.clock_offset += float(seconds)
        return _json({"offset_s": api.clock_offset})

    async def reset(request: Request) -> Response:
        api.log.reset()
        api.reset_concurrency_stats()
        return _json({"ok": True})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = "Not found" if status == 404 else (exc.detail if isinstance(exc, HTTPException) else "error")
        return _error(error_from_status(status, f"{request.method} {request.url.path}: {message}"))

    app = Starlette(
        routes=[
            Route("/v1/messages/count_tokens", tokens, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/models/{model_id}", model, methods=["GET"]),
            Route("/v1/messages/batches", batch_create, methods=["POST"]),
            Route("/v1/messages/batches", batch_list, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", batch_get, methods=["GET"]),
            Route("/v1/messages/batches/{batch_id}", batch_delete, methods=["DELETE"]),
            Route("/v1/messages/batches/{batch_id}/cancel", batch_cancel, methods=["POST"]),
            Route("/v1/messages/batches/{batch_id}/results", batch_results, methods=["GET"]),
            Route("/_simulator/requests", billed, methods=["GET"]),
            Route("/_simulator/received", received, methods=["GET"]),
            Route("/_simulator/totals", totals, methods=["GET"]),
            Route("/_simulator/reset", reset, methods=["POST"]),
            Route("/_simulator/clock", advance_clock, methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
    app.state.api = api
    return SimulatorApp(api, app)


def _received(record: ReceivedRequest) -> dict[str, Any]:
    return {
        "request_id": record.request_id,
        "method": record.method,
        "path": record.path,
        "query": record.query,
        "headers": record.headers,
        "body": record.body,
    }
