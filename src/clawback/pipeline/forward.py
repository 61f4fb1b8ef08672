"""The pipeline's terminal step: send the request upstream and turn the answer into a ``Reply``.

Streams are relayed chunk by chunk as they arrive (a parser reads usage out of ``message_start`` and
``message_delta`` on the side, without holding anything back). Error statuses and bodies are relayed
unmodified. If the upstream breaks mid-stream, the client gets the documented ``event: error``; if the
client goes away, the upstream connection is dropped (the call is cancelled) and the usage seen so far is
what the ledger records.

A stream's first chunk is read before the ``Reply`` is returned: a failure up to that point (the connection
dropped, the read timed out) raises an ``ApiError`` like any failure before an answer, which the dispatch stage
may retry, because nothing has reached the client yet. After it, nothing is ever retried. A JSON body that
breaks off raises with ``upstream_request_id`` set: the upstream accepted that attempt and may have billed it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

import orjson

from clawback.api.errors import ApiError
from clawback.api.sse import SSEParser, encode_event
from clawback.api.usage import Usage
from clawback.pipeline.context import Reply, RequestContext
from clawback.upstream.client import UpstreamClient, UpstreamResponse
from clawback.upstream.headers import request_headers_for_upstream, response_headers_for_client

__all__ = ["Forwarder"]

#: The only events the relay needs to read; the rest pass through without being decoded.
_USAGE_EVENTS = frozenset({"message_start", "message_delta", "error"})


class Forwarder:
    def __init__(self, client: UpstreamClient) -> None:
        self.client = client

    async def __call__(self, ctx: RequestContext) -> Reply:
        headers = request_headers_for_upstream(ctx.headers, ctx.upstream_auth)
        response = await self.client.send(ctx.method, ctx.path, ctx.query, headers, ctx.body_bytes())
        relayed = response_headers_for_client(response.headers)
        reply = Reply(status=response.status, headers=relayed, upstream_request_id=response.header("request-id"))
        content_type = response.header("content-type") or ""
        if response.status == 200 and content_type.startswith("text/event-stream"):
            chunks = response.iter_chunks()
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                first = b""
            except ApiError as exc:
                response.close()
                exc.upstream_request_id = reply.upstream_request_id
                raise
            except BaseException:
                response.close()
                raise
            reply.ttft = time.monotonic() - ctx.started
            reply.stream = self._relay(response, chunks, first, reply, ctx.started)
            return reply
        try:
            reply.body = await response.read()
        except ApiError as exc:
            exc.upstream_request_id = reply.upstream_request_id
            raise
        reply.ttft = time.monotonic() - ctx.started
        reply.finished = True
        if response.status >= 400:
            reply.error_type = _error_type(reply.body) or "api_error"
        elif ctx.endpoint == "messages":
            with contextlib.suppress(orjson.JSONDecodeError, AttributeError):
                reply.usage = Usage.from_api(orjson.loads(reply.body).get("usage"))
        return reply

    @staticmethod
    async def _relay(
        response: UpstreamResponse, chunks: AsyncIterator[bytes], first: bytes, reply: Reply, started: float
    ) -> AsyncIterator[bytes]:
        parser = SSEParser(only=_USAGE_EVENTS)
        try:
            chunk = first
            while True:
                if reply.ttft is None:
                    reply.ttft = time.monotonic() - started
                for event in parser.feed(chunk):
                    _observe(event.event, event.data, reply)
                if chunk:
                    yield chunk
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
            reply.finished = True
        except ApiError as exc:  # the upstream broke off: say so the documented way, after the 200
            reply.error_type = exc.error_type
            yield encode_event("error", exc.body(reply.upstream_request_id))
        finally:
            if not reply.finished and reply.error_type is None:
                reply.error_type = "client_disconnected"
            if reply.finished:
                response.release()
            else:
                response.close()
            reply.closed()


def _observe(name: str, data: str, reply: Reply) -> None:
    if name == "message_start":
        message = orjson.loads(data).get("message") or {}
        reply.usage = Usage.from_api(message.get("usage"))
    elif name == "message_delta":
        reply.usage = reply.usage.updated(orjson.loads(data).get("usage"))
    elif name == "error":
        reply.error_type = _error_type(data.encode()) or "api_error"


def _error_type(body: bytes) -> str | None:
    try:
        error = orjson.loads(body).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return error.get("type") if isinstance(error, dict) and isinstance(error.get("type"), str) else None
