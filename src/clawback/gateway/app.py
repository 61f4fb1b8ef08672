"""The Anthropic-compatible gateway: ``clawback serve``.

Routes: ``POST /v1/messages`` and ``/v1/messages/count_tokens`` through the pipeline; every other ``/v1/…``
path (batches, models, whatever the API adds) forwarded as is; ``HEAD /api/hello`` for Claude Code's
gateway check; ``/healthz`` and ``/metrics``. A failure is always an Anthropic error envelope, never a
traceback; an upstream error is relayed unmodified.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from clawback.api.errors import ApiError, error_body
from clawback.api.gateway_checks import check_gateway_request
from clawback.api.messages import parse_json_body
from clawback.api.usage import Usage
from clawback.asgi import ClientGone, RelayResponse, read_body, send_response
from clawback.config import ANTHROPIC_API_URL, ConfigError, Settings
from clawback.gateway.auth import Authenticator
from clawback.gateway.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from clawback.pipeline.build import build_pipeline
from clawback.pipeline.context import Reply, RequestContext, new_request_id
from clawback.pipeline.stage import Pipeline
from clawback.pricing import PriceBook, load_price_book
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerRecord, LedgerWriter
from clawback.storage.migrate import migrate
from clawback.upstream.client import UpstreamClient
from clawback.upstream.forward import Forwarder

__all__ = ["Gateway", "GatewayApp", "create_gateway_app", "resolve_upstream"]

log = logging.getLogger("clawback.gateway")

SIMULATOR_KEY = "sk-clawback-simulator"
#: The Message Batches API takes bodies up to 256 MB.
BATCHES_BODY_LIMIT = 256 * 1024 * 1024


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
        for stage in self.pipeline.stages:
            close = getattr(stage, "aclose", None)
            if close is not None:
                await close()
        await self.upstream.aclose()
        await self.ledger.aclose()

    def stage(self, name: str) -> Any:
        """The pipeline stage called ``name``, or None when it is not configured."""
        return next((s for s in self.pipeline.stages if s.name == name), None)


def _usage_of(record: LedgerRecord) -> Usage:
    return Usage(record.input_tokens, record.output_tokens, record.cache_read_input_tokens,
                 record.cache_write_5m_input_tokens, record.cache_write_1h_input_tokens)  # fmt: skip


def _client_headers(request: Request) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]]


def _to_response(reply: Reply) -> Response | RelayResponse:
    if reply.stream is not None:
        return RelayResponse(reply.stream, reply.status, reply.headers)
    response = Response(reply.body or b"", status_code=reply.status)
    for key, value in reply.headers:
        response.headers.append(key, value)
    return response


class PipelineEndpoint:
    """``POST /v1/messages`` and ``/v1/messages/count_tokens``: the hot path, as a plain ASGI app.

    No framework objects on this path: ``benchmarks/stack/README.md`` measured Starlette's request/response
    layer at 10-20 % of a proxy's throughput (35 % for SSE). Headers stay raw until the pipeline needs them.
    """

    def __init__(self, gateway: Gateway, endpoint: str) -> None:
        self.gateway = gateway
        self.endpoint = endpoint
        self.limit = gateway.settings.gateway.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = new_request_id()
        started = False
        try:
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]
            tenant, upstream_auth = self.gateway.auth.authenticate(headers)
            raw = await read_body(scope, receive, self.limit)
            body = parse_json_body(raw)
            if self.endpoint == "messages":
                check_gateway_request(body)  # only what the gateway reads: the upstream judges the rest
            ctx = RequestContext(
                request_id=request_id, endpoint=self.endpoint, body=body, raw_body=raw, path=scope["path"],
                headers=headers, query=scope["query_string"].decode("latin-1"), tenant=tenant,
                upstream_auth=upstream_auth,
            )  # fmt: skip
            reply = await self.gateway.pipeline(ctx)
            reply.headers.append(("x-clawback-request-id", request_id))
            if reply.stream is not None:
                started = True
                await RelayResponse(reply.stream, reply.status, reply.headers)(scope, receive, send)
                return
            response_body = reply.body or b""
            status, response_headers = reply.status, reply.headers
        except ApiError as exc:
            response_body = exc.json_bytes(request_id)
            status = exc.status
            response_headers = [*exc.headers.items(), ("content-type", "application/json")]
        except ClientGone:
            return
        except Exception:
            log.exception("gateway failed on %s", scope["path"])
            if started:
                return
            response_body = orjson.dumps(error_body("api_error", "clawback gateway internal error", request_id))
            status, response_headers = 500, [("content-type", "application/json")]
        await send_response(send, status, response_headers, response_body)


class GatewayApp:
    """The ASGI app: the two pipeline endpoints first, everything else through Starlette's router."""

    def __init__(self, gateway: Gateway, router: Starlette) -> None:
        self.gateway = gateway
        self.router = router
        self.fast = {
            "/v1/messages": PipelineEndpoint(gateway, "messages"),
            "/v1/messages/count_tokens": PipelineEndpoint(gateway, "count_tokens"),
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.fast.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.router(scope, receive, send)


def create_gateway_app(settings: Settings, price_book: PriceBook | None = None) -> GatewayApp:
    gateway = Gateway.from_settings(settings, price_book)
    results_url = re.compile(rb'("results_url"\s*:\s*")' + re.escape(gateway.upstream_url.rstrip("/").encode()))

    async def passthrough(request: Request) -> Response | RelayResponse:
        """Anything else under /v1/: authenticate, forward unchanged, relay unchanged."""
        try:
            headers = _client_headers(request)
            tenant, upstream_auth = gateway.auth.authenticate(headers)
            raw = await read_body(request.scope, request.receive, BATCHES_BODY_LIMIT)
            ctx = RequestContext(
                request_id=new_request_id(), endpoint="passthrough", body={}, raw_body=raw or None,
                method=request.method, path=request.url.path, headers=headers, query=request.url.query,
                tenant=tenant, upstream_auth=upstream_auth,
            )  # fmt: skip
            reply = await gateway.forward(ctx)
        except ApiError as exc:
            return _error(exc)
        except ClientGone:
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

    admin_token = settings.gateway.admin_token

    def admin_denied(request: Request) -> Response | None:
        """None when the request carries the admin token; 404 when no token is configured (admin API off)."""
        if admin_token is None:
            return _json(error_body("not_found_error", f"{request.url.path}: the admin API is disabled "
                                    "(set gateway.admin_token)"), 404)  # fmt: skip
        sent = request.headers.get("authorization", "")
        sent = sent[7:].strip() if sent.lower().startswith("bearer ") else request.headers.get("x-admin-token", "")
        if not hmac.compare_digest(sent.encode(), admin_token.get_secret_value().encode()):
            return _json(error_body("authentication_error", "admin API: invalid or missing admin token"), 401)
        return None

    async def cache_invalidate(request: Request) -> Response:
        """``POST /admin/cache/invalidate`` with one or more of ``key``, ``namespace``, ``tag``."""
        denied = admin_denied(request)
        if denied is not None:
            return denied
        try:
            spec = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            spec = None
        fields = {k: spec.get(k) for k in ("key", "namespace", "tag")} if isinstance(spec, dict) else {}
        if not any(isinstance(v, str) and v for v in fields.values()):
            return _json(error_body("invalid_request_error", "give at least one of key, namespace, tag"), 400)
        stage = gateway.stage("exact_cache")
        if stage is None:
            return _json({"invalidated": 0, "enabled": False})
        count = await stage.backend.invalidate(**{k: v for k, v in fields.items() if isinstance(v, str) and v})
        return _json({"invalidated": count, "enabled": True})

    async def cache_stats(request: Request) -> Response:
        """``GET /admin/cache/stats``: exact-cache counters, planner payback per prefix family, recent churn."""
        denied = admin_denied(request)
        if denied is not None:
            return denied
        exact, planner = gateway.stage("exact_cache"), gateway.stage("prompt_cache")
        return _json({"exact_cache": exact.stats() if exact else None, "prompt_cache": planner.report() if planner
                      else None})  # fmt: skip

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
            Route("/v1/{rest:path}", passthrough, methods=methods),
            Route("/api/hello", hello, methods=["GET", "HEAD"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/admin/cache/invalidate", cache_invalidate, methods=["POST"]),
            Route("/admin/cache/stats", cache_stats, methods=["GET"]),
        ],
        exception_handlers={404: not_found, 405: not_found, Exception: crashed},
        lifespan=lifespan,
    )
    return GatewayApp(gateway, app)
