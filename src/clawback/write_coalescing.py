"""The gateway's HTTP protocol: uvicorn's httptools protocol, with the writes of one event-loop turn sent as one.

uvicorn writes a response's status line and headers on ``http.response.start`` and its body on
``http.response.body``: two ``write`` system calls, two TCP segments on the client's connection, for a response
that the app hands over in one go. On this machine a loopback ``write`` is not cheap: py-spy of the gateway at
32 connections put ~20 % of the event loop's samples inside uvicorn's ``send`` (the two writes) and ~8 % in
aiohttp's one write of the upstream request (issue 19, ``benchmarks/README.md``). Holding what is written until
the end of the loop turn (``call_soon``) and sending it with one ``write`` (pieces joined), or one ``writev``
past ``FLUSH_AT`` bytes (no copy of a large body), halves the response's system calls; a stream's head leaves
with its first event, and its last event with the chunked terminator.

What does not change: nothing waits longer than the current turn of the loop (a stream's events still leave as
they arrive); past ``FLUSH_AT`` bytes pending (uvicorn's high-water mark) the data is written at once, so the
transport's flow control (``pause_writing``) sees a large or fast producer exactly as before; ``close()`` sends
what is pending first; a transport that is already closing gets nothing (uvicorn itself writes nothing to a
disconnected client). Everything else is the transport's own (``__getattr__``).

The simulator keeps plain ``httptools`` (``serving.run_app``'s default): the upstream the benchmarks compare
against is served as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["FLUSH_AT", "CoalescingHttpToolsProtocol", "CoalescingTransport"]

#: Pending bytes that are written at once rather than at the end of the turn (uvicorn's high-water mark).
FLUSH_AT = HIGH_WATER_LIMIT


class CoalescingTransport:
    """A transport whose writes of one loop turn go out in one system call (see the module docstring)."""

    __slots__ = ("_loop", "_pending", "_size", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)
        self._size += len(data)
        if self._size >= FLUSH_AT:
            self.flush()

    def flush(self) -> None:
        """Write what is pending now (also called at the end of the turn; a no-op when nothing is)."""
        pending, size = self._pending, self._size
        if not pending:
            return
        self._pending = []
        self._size = 0
        if self._transport.is_closing():
            return
        if len(pending) == 1:
            self._transport.write(pending[0])
        elif size < FLUSH_AT:  # a head and its body: joined, written at once (uvloop's write fast path)
            self._transport.write(b"".join(pending))
        else:  # a large body: one writev, not a copy (uvloop sends writelines at the end of the loop's turn)
            self._transport.writelines(pending)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    # Called on every request by uvicorn's flow control: defined, not looked up through __getattr__.
    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a ``CoalescingTransport``: the server ``clawback serve`` runs."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        coalescing: Any = CoalescingTransport(transport, self.loop)
        super().connection_made(coalescing)
