"""An ASGI response that relays a stream as it arrives and notices a client that leaves.

Claude Code aborts a stream that stays silent for 300 s, so nothing is buffered: each upstream chunk is
sent as soon as it is read. A disconnect is watched for on ``receive`` while the relay runs, so the
upstream call is cancelled at once rather than at the next chunk, and the relay iterator is always closed
(its ``finally`` records the usage seen so far in the ledger).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.types import Receive, Scope, Send

__all__ = ["RelayResponse"]


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
