"""The gateway's server protocol (``clawback.write_coalescing``) over real sockets: one system call per plain
response, a stream's head with its first event, and otherwise the bytes, the timing and the flow control of
plain uvicorn (large bodies whole, a stream's chunks not held back, a disconnect seen)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from clawback import write_coalescing
from clawback.serving import BackgroundServer
from clawback.write_coalescing import CoalescingHttpToolsProtocol, CoalescingTransport


class RecordingTransport:
    """Between ``CoalescingTransport`` and the socket: what each system call carried."""

    def __init__(self, transport: Any, calls: list[bytes]) -> None:
        self._transport = transport
        self._calls = calls

    def write(self, data: bytes) -> None:
        self._calls.append(bytes(data))
        self._transport.write(data)

    def writelines(self, pieces: list[bytes]) -> None:
        self._calls.append(b"".join(pieces))
        self._transport.writelines(pieces)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@pytest.fixture
def socket_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[bytes]]:
    calls: list[bytes] = []

    def recording(transport: Any, loop: Any) -> CoalescingTransport:
        return CoalescingTransport(RecordingTransport(transport, calls), loop)  # type: ignore[arg-type]

    monkeypatch.setattr(write_coalescing, "CoalescingTransport", recording)
    yield calls


REQUEST = {"model": "claude-sonnet-4-5", "max_tokens": 32, "messages": [{"role": "user", "content": "Hello there"}]}


def test_gateway_sends_a_plain_response_in_one_system_call(
    socket_writes: list[bytes], gateway: BackgroundServer, gateway_key: str
) -> None:
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}) as client:
        client.get("/healthz")  # the connection is open and idle: its own writes are counted out
        socket_writes.clear()
        response = client.post("/v1/messages", json=REQUEST)
    assert response.status_code == 200, response.text
    assert response.headers["anthropic-ratelimit-requests-limit"]  # the upstream's headers relayed
    assert response.headers["x-clawback-request-id"]
    assert len(socket_writes) == 1, socket_writes
    assert socket_writes[0].startswith(b"HTTP/1.1 200") and socket_writes[0].endswith(response.content)


def test_gateway_sends_a_streams_head_with_its_first_event(
    socket_writes: list[bytes], gateway: BackgroundServer, gateway_key: str
) -> None:
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}) as client:
        client.get("/healthz")
        socket_writes.clear()
        with client.stream("POST", "/v1/messages", json={**REQUEST, "stream": True}) as response:
            body = b"".join(response.iter_raw())
    assert response.status_code == 200
    assert b"event: message_stop" in body
    head, _, first = socket_writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
    assert b"event: message_start" in first
    assert socket_writes[-1].endswith(b"0\r\n\r\n")


class App:
    """A plain ASGI app served by the gateway's protocol."""

    http_protocol = CoalescingHttpToolsProtocol
    LARGE = bytes(range(256)) * (3 * 1024 * 1024 // 256)  # 3 MiB, past the flush threshold many times

    def __init__(self) -> None:
        self.read_first = threading.Event()
        self.disconnected = threading.Event()
        self.first_was_read = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/large":
            head = [(b"content-length", str(len(self.LARGE)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": head})
            for i in range(0, len(self.LARGE), 16384):  # many writes in one turn unless the socket pushes back
                await send({"type": "http.response.body", "body": self.LARGE[i : i + 16384], "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        # /paced: the second chunk is produced only once the client has read the first (or after 5 s): a first
        # chunk held back waiting for more data would reach the client only with the second.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        for _ in range(500):
            if self.read_first.is_set():
                break
            await asyncio.sleep(0.01)
        self.first_was_read = self.read_first.is_set()
        await send({"type": "http.response.body", "body": b"second\n", "more_body": True})
        while (await receive())["type"] != "http.disconnect":
            pass
        self.disconnected.set()


def test_large_bodies_arrive_whole_and_chunks_are_not_held_back() -> None:
    app = App()
    with BackgroundServer(app) as server:
        assert server.server.config.http_protocol_class is CoalescingHttpToolsProtocol
        with httpx.Client(base_url=server.url, timeout=10) as client:
            assert client.get("/large").content == App.LARGE
            with client.stream("GET", "/paced") as response:
                lines = response.iter_lines()
                assert next(lines) == "first"
                app.read_first.set()
                assert next(lines) == "second"
                assert app.first_was_read  # "first" reached the client before "second" was produced
        # the client went away mid-response: the app hears of it
        assert app.disconnected.wait(5)


def test_a_raw_client_gets_the_same_bytes_with_connection_close() -> None:
    app = App()
    with BackgroundServer(app) as server, socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"GET /large HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = bytearray()
        while chunk := sock.recv(1 << 20):  # the server closes after the response: everything pending was sent
            data += chunk
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"connection: close" in head
    assert body == App.LARGE
