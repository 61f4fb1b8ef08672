"""The Anthropic-compatible gateway: ``clawback serve``.

``POST /v1/messages`` and ``/v1/messages/count_tokens`` go through the pipeline on a plain-ASGI fast path
(``PipelineEndpoint``); every other route is Starlette's (``gateway.routes``, the admin API in ``gateway.admin``).
The process's state is ``gateway.process.Gateway``. A failure is always an Anthropic error envelope, never a
traceback; an upstream error is relayed unmodified.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from clawback.api.errors import ApiError, error_body
from clawback.asgi import ClientGone, RelayResponse, read_body, send_response
from clawback.config import Settings
from clawback.front.intake import PIPELINE_PATHS
from clawback.gateway import admin, budget_admin, routes
from clawback.gateway.process import Gateway, resolve_upstream
from clawback.pipeline.context import new_request_id
from clawback.pricing import PriceBook
from clawback.write_coalescing import CoalescingHttpToolsProtocol

__all__ = [
    "WORKER_CONFIG_ENV",
    "Gateway",
    "GatewayApp",
    "PipelineEndpoint",
    "create_gateway_app",
    "resolve_upstream",
    "worker_app",
]

log = logging.getLogger("clawback.gateway")


class PipelineEndpoint:
    """``POST /v1/messages`` and ``/v1/messages/count_tokens``: the hot path, as a plain ASGI app.

    No framework objects on this path: Starlette's request/response layer costs a share of a proxy's throughput
    that shows (``docs/performance.md``). Headers stay raw until the pipeline needs them.
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
            intake = self.gateway.intake
            caller = intake.caller(headers)
            raw = await read_body(scope, receive, self.limit)
            ctx = intake.context(
                caller, request_id=request_id, endpoint=self.endpoint, method="POST", path=scope["path"],
                query=scope["query_string"].decode("latin-1"), headers=headers, raw=raw,
            )  # fmt: skip
            reply = await self.gateway.pipeline(ctx)
            intake.stamp(reply, request_id)
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

    #: The HTTP protocol ``clawback.serving`` serves this app with (the writes of one loop turn sent as one).
    http_protocol = CoalescingHttpToolsProtocol

    def __init__(self, gateway: Gateway, router: Starlette) -> None:
        self.gateway = gateway
        self.router = router
        self.fast = {path: PipelineEndpoint(gateway, endpoint) for path, endpoint in PIPELINE_PATHS.items()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            endpoint = self.fast.get(scope["path"])
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return
        await self.router(scope, receive, send)


def create_gateway_app(settings: Settings, price_book: PriceBook | None = None) -> GatewayApp:
    gateway = Gateway.from_settings(settings, price_book)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.aclose()

    router = Starlette(
        routes=[*routes.routes, *admin.routes, *budget_admin.routes],
        exception_handlers=routes.exception_handlers,
        lifespan=lifespan,
    )
    router.state.gateway = gateway
    return GatewayApp(gateway, router)


#: Where ``clawback serve --workers N`` tells its worker processes which YAML file to read (if any).
WORKER_CONFIG_ENV = "CLAWBACK_SERVE_CONFIG_FILE"


def worker_app() -> GatewayApp:
    """The app of one worker process of ``clawback serve --workers N`` (uvicorn calls it in each process).

    The settings are read again from the same file and environment as the parent's (the parent put its command
    line options in ``CLAWBACK_*`` variables); each worker takes a journal slot of its own
    (``storage.journal.claim_journal_slot``) and tunes itself as ``serving.run_app`` does for the gateway.
    """
    import os

    from clawback.config import load_settings
    from clawback.serving import GATEWAY_GC_THRESHOLD, tune_process
    from clawback.storage.journal import claim_journal_slot

    settings = load_settings(os.environ.get(WORKER_CONFIG_ENV) or None)
    settings.ledger = settings.ledger.model_copy(
        update={"journal_path": str(claim_journal_slot(settings.ledger.journal_path))}
    )
    app = create_gateway_app(settings)
    tune_process(GATEWAY_GC_THRESHOLD)
    return app
