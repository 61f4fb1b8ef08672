"""Plain-ASGI building blocks for the hot paths of the gateway and the simulator.

Starlette's request/response layer costs a measurable share of a proxy's throughput (``docs/performance.md``),
so ``POST /v1/messages`` skips it on both servers; everything else keeps Starlette.

``RelayResponse`` relays a stream as it arrives and notices a client that leaves. Claude Code aborts a stream
that stays silent for 300 s, so nothing is buffered: each chunk is sent as soon as it is read. A disconnect
is watched for on ``receive`` while the relay runs, so the upstream call is cancelled at once rather than at
the next chunk, and the iterator is always closed (its ``finally`` records the usage seen so far).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable

from starlette.types import Receive, Scope, Send

from clawback.api.errors import RequestTooLargeError

__all__ = ["ClientGone", "RelayResponse", "header", "read_body", "send_response"]


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def header(scope: Scope, name: bytes) -> str | None:
    """One request header (``name`` in lower case), straight from the ASGI scope."""
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body; ``RequestTooLargeError`` past ``limit`` bytes (declared or actual)."""
    declared = header(scope, b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _too_large(limit: int) -> RequestTooLargeError:
    return RequestTooLargeError(f"Request exceeds the maximum allowed number of bytes ({limit}).")


async def send_response(send: Send, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
    """A whole response in two messages, with its content-length (else uvicorn falls back to chunked)."""
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


class RelayResponse:
    def __init__(self, chunks: AsyncIterator[bytes], status: int, headers: list[tuple[str, str]]) -> None:
        self.chunks = chunks
        self.status = status
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def relay() -> None:
            await send({"type": "http.response.start", "status": self.status, "headers": self.headers})
            async for chunk in self.chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        relaying = asyncio.ensure_future(relay())
        watching = asyncio.ensure_future(watch())
        try:
            await asyncio.wait({relaying, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if not relaying.done():
                relaying.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await relaying
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()
