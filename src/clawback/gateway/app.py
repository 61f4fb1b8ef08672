"""The Anthropic-compatible gateway: ``clawback serve``.

Routes: ``POST /v1/messages`` and ``/v1/messages/count_tokens`` through the pipeline; every other ``/v1/…``
path (batches, models, whatever the API adds) forwarded as is; ``HEAD /api/hello`` for Claude Code's
gateway check; ``/healthz`` and ``/metrics``. A failure is always an Anthropic error envelope, never a
traceback; an upstream error is relayed unmodified.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from clawback.api.errors import ApiError, RequestTooLargeError, error_body
from clawback.api.messages import parse_json_body, validate_messages_request
from clawback.api.usage import Usage
from clawback.config import ANTHROPIC_API_URL, ConfigError, Settings
from clawback.gateway.auth import Authenticator
from clawback.gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from clawback.gateway.relay import RelayResponse
from clawback.pipeline.build import build_pipeline
from clawback.pipeline.context import Reply, RequestContext
from clawback.pipeline.stage import Pipeline
from clawback.pricing import PriceBook, load_price_book
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerRecord, LedgerWriter
from clawback.storage.migrate import migrate
from clawback.upstream.client import UpstreamClient
from clawback.upstream.forward import Forwarder

__all__ = ["Gateway", "create_gateway_app", "resolve_upstream"]

log = logging.getLogger("clawback.gateway")

SIMULATOR_KEY = "sk-clawback-simulator"


def resolve_upstream(settings: Settings) -> tuple[str, str | None]:
    """The upstream URL and the key the gateway sends there.

    No URL and ``ANTHROPIC_API_KEY`` set: the real API. No URL and no key: a start-up error that says what
    to do. An explicit URL without a key (the simulator): a placeholder key, which the simulator accepts.
    """
    configured_key = settings.upstream.api_key.get_secret_value() if settings.upstream.api_key else None
    env_key = os.environ.get("ANTHROPIC_API_KEY") or None
    key = configured_key or env_key
    if settings.upstream.url:
        return settings.upstream.url, key or SIMULATOR_KEY
    if key:
        return ANTHROPIC_API_URL, key
    raise ConfigError(
        "no upstream: pass --upstream URL (for example the simulator: clawback simulate, then "
        "--upstream http://127.0.0.1:8788) or set ANTHROPIC_API_KEY to use the real Anthropic API"
    )


def _json(data: Any, status: int = 200, headers: list[tuple[str, str]] | None = None) -> Response:
    response = Response(orjson.dumps(data), status_code=status, media_type="application/json")
    for key, value in headers or []:
        response.headers.append(key, value)
    return response


def _error(exc: ApiError, request_id: str | None = None) -> Response:
    return _json(exc.body(request_id), exc.status, list(exc.headers.items()))


@dataclass
class Gateway:
    """Everything one gateway process holds: built at start-up, closed at shutdown."""

    settings: Settings
    upstream_url: str
    upstream: UpstreamClient
    forward: Forwarder
    pipeline: Pipeline
    auth: Authenticator
    ledger: LedgerWriter
    metrics: GatewayMetrics
    price_book: PriceBook

    @classmethod
    def from_settings(cls, settings: Settings, price_book: PriceBook | None = None) -> Gateway:
        upstream_url, upstream_key = resolve_upstream(settings)
        migrate(settings.ledger.url)
        price_book = price_book or load_price_book(settings.pricing)
        keys = KeyStore(settings.ledger.url)
        ledger = LedgerWriter.from_settings(settings.ledger)
        metrics = GatewayMetrics()
        client = UpstreamClient(upstream_url, settings.upstream)
        forward = Forwarder(client)

        def observe(record: LedgerRecord) -> None:
            metrics.observe(
                endpoint=record.endpoint, model=record.model, key=record.key_id or "-", status=record.status,
                error_type=record.error_type, seconds=record.latency_ms / 1000,
                usage=_usage_of(record), cost_micro_usd=record.cost_micro_usd,
                saved_micro_usd=record.saved_micro_usd,
            )  # fmt: skip

        pipeline = build_pipeline(settings, price_book=price_book, sinks=[ledger.submit, observe], terminal=forward)
        auth = Authenticator(settings.gateway, keys, upstream_key)
        return cls(settings, upstream_url, client, forward, pipeline, auth, ledger, metrics, price_book)

    async def start(self) -> None:
        await self.ledger.start()

    async def aclose(self) -> None:
        await self.upstream.aclose()
        await self.ledger.aclose()


def _usage_of(record: LedgerRecord) -> Usage:
    return Usage(record.input_tokens, record.output_tokens, record.cache_read_input_tokens,
                 record.cache_write_5m_input_tokens, record.cache_write_1h_input_tokens)  # fmt: skip


def _client_headers(request: Request) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    too_large = RequestTooLargeError(f"Request exceeds the maximum allowed number of bytes ({limit}).")
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _to_response(reply: Reply) -> Response | RelayResponse:
    if reply.stream is not None:
        return RelayResponse(reply.stream, reply.status, reply.headers)
    response = Response(reply.body or b"", status_code=reply.status)
    for key, value in reply.headers:
        response.headers.append(key, value)
    return response


def create_gateway_app(settings: Settings, price_book: PriceBook | None = None) -> Starlette:
    gateway = Gateway.from_settings(settings, price_book)
    limit = settings.gateway.max_body_bytes
    results_url = re.compile(rb'("results_url"\s*:\s*")' + re.escape(gateway.upstream_url.rstrip("/").encode()))

    async def pipeline_endpoint(request: Request, endpoint: str) -> Response | RelayResponse:
        request_id = "cbreq_" + secrets.token_hex(12)
        try:
            headers = _client_headers(request)
            tenant, upstream_auth = gateway.auth.authenticate(headers)
            raw = await _read_body(request, limit)
            body = parse_json_body(raw)
            if endpoint == "messages":
                validate_messages_request(body, strict=False)
            ctx = RequestContext(
                request_id=request_id, endpoint=endpoint, body=body, raw_body=raw, path=request.url.path,
                headers=headers, query=request.url.query, tenant=tenant, upstream_auth=upstream_auth,
            )  # fmt: skip
            reply = await gateway.pipeline(ctx)
        except ApiError as exc:
            return _error(exc, request_id)
        except ClientDisconnect:
            return Response(status_code=499)
        response = _to_response(reply)
        if isinstance(response, Response):
            response.headers["x-clawback-request-id"] = request_id
        else:
            response.headers.append((b"x-clawback-request-id", request_id.encode()))
        return response

    async def messages(request: Request) -> Response | RelayResponse:
        return await pipeline_endpoint(request, "messages")

    async def count_tokens(request: Request) -> Response | RelayResponse:
        return await pipeline_endpoint(request, "count_tokens")

    async def passthrough(request: Request) -> Response | RelayResponse:
        """Anything else under /v1/: authenticate, forward unchanged, relay unchanged."""
        try:
            headers = _client_headers(request)
            tenant, upstream_auth = gateway.auth.authenticate(headers)
            raw = await _read_body(request, 256 * 1024 * 1024)
            ctx = RequestContext(
                request_id="cbreq_" + secrets.token_hex(12), endpoint="passthrough", body={}, raw_body=raw or None,
                method=request.method, path=request.url.path, headers=headers, query=request.url.query,
                tenant=tenant, upstream_auth=upstream_auth,
            )  # fmt: skip
            reply = await gateway.forward(ctx)
        except ApiError as exc:
            return _error(exc)
        except ClientDisconnect:
            return Response(status_code=499)
        if reply.body and request.url.path.startswith("/v1/messages/batches"):
            # A batch's results_url names the upstream; clients must fetch results through us (with
            # their clawback key), so the upstream's base URL becomes ours. Nothing else is touched.
            ours = str(request.base_url).rstrip("/").encode()
            reply.body = results_url.sub(lambda m: m.group(1) + ours, reply.body)
        return _to_response(reply)

    async def hello(request: Request) -> Response:
        return Response(status_code=200)

    async def healthz(request: Request) -> Response:
        stats = gateway.ledger.stats()
        healthy = stats.database_up and stats.lost == 0
        return _json(
            {
                "status": "ok" if healthy else "degraded",
                "upstream": gateway.upstream_url,
                "ledger": {
                    "database_up": stats.database_up,
                    "queue_depth": stats.queue_depth,
                    "written": stats.written,
                    "journal_pending": stats.journal_pending,
                    "lost": stats.lost,
                },
                "prices_as_of": gateway.price_book.as_of,
            },
            200 if healthy else 503,
        )

    async def metrics(request: Request) -> Response:
        return Response(gateway.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        message = "Not found" if status == 404 else ("Method not allowed" if status == 405 else "error")
        error_type = {404: "not_found_error", 405: "invalid_request_error"}.get(status, "api_error")
        return _json(error_body(error_type, f"{request.method} {request.url.path}: {message}"), status)

    async def crashed(request: Request, exc: Exception) -> Response:
        log.exception("gateway failed on %s", request.url.path)
        return _json(error_body("api_error", "clawback gateway internal error (see the gateway log)"), 500)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE"]
    app = Starlette(
        routes=[
            Route("/v1/messages", messages, methods=["POST"]),
            Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
            Route("/v1/{rest:path}", passthrough, methods=methods),
            Route("/api/hello", hello, methods=["GET", "HEAD"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found, Exception: crashed},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
