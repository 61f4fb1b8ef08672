"""Minimal fast fake Anthropic Messages API upstream (raw ASGI, no framework).

POST /v1/messages -> canned ~600-byte JSON message, or, when the request body has
``"stream": true``, a canned SSE stream of 8 events (each sent as its own chunk, the way
the real API flushes them). Anything else -> 404.

Run: granian --interface asgi --loop uvloop --http 1 --no-ws benchmarks.stack.upstream:app
 or: uvicorn --loop uvloop --http httptools --no-access-log benchmarks.stack.upstream:app
"""

from __future__ import annotations

import orjson

_MESSAGE = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {
            "type": "text",
            "text": (
                "Hello! The capital of France is Paris. It has been the country's political, economic and "
                "cultural centre for centuries, and is home to landmarks such as the Eiffel Tower, the Louvre, "
                "Notre-Dame cathedral and the Arc de Triomphe at the top of the Champs-Élysées."
            ),
        }
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 412,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 2048,
        "output_tokens": 48,
        "service_tier": "standard",
    },
}
JSON_BODY = orjson.dumps(_MESSAGE)


def _sse(event: str, data: dict) -> bytes:
    return b"event: " + event.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


_START = dict(_MESSAGE, content=[], stop_reason=None, usage={"input_tokens": 412, "output_tokens": 1})


def _delta(text: str) -> bytes:
    return _sse(
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
    )


_BLOCK = {"type": "text", "text": ""}
SSE_EVENTS: tuple[bytes, ...] = (
    _sse("message_start", {"type": "message_start", "message": _START}),
    _sse("content_block_start", {"type": "content_block_start", "index": 0, "content_block": _BLOCK}),
    _delta("Hello! The capital"),
    _delta(" of France"),
    _delta(" is Paris."),
    _sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
    _sse(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": 12},
        },
    ),
    _sse("message_stop", {"type": "message_stop"}),
)

_COMMON = [
    (b"request-id", b"req_011CSHoEeqs5C35K2UUqR7Fy"),
    (b"anthropic-organization-id", b"00000000-0000-0000-0000-000000000000"),
    (b"anthropic-ratelimit-requests-limit", b"4000"),
    (b"anthropic-ratelimit-requests-remaining", b"3999"),
]
JSON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(JSON_BODY)).encode()),
    *_COMMON,
]
SSE_HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"), *_COMMON]
NOT_FOUND = b'{"type":"error","error":{"type":"not_found_error","message":"Not found"}}'


async def _read_body(receive) -> bytes:
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        return body  # fast path: whole body in one message
    parts = [body]
    while msg.get("more_body"):
        msg = await receive()
        parts.append(msg.get("body", b""))
    return b"".join(parts)


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        return
    if scope["path"] != "/v1/messages" or scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": NOT_FOUND})
        return
    req = orjson.loads(await _read_body(receive))
    if req.get("stream"):
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        for ev in SSE_EVENTS:
            await send({"type": "http.response.body", "body": ev, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
        await send({"type": "http.response.body", "body": JSON_BODY})
