"""Minimal reverse proxy for POST /v1/messages, raw ASGI, with a pluggable upstream client.

Environment:
  UPSTREAM_URL   base URL of the upstream (default http://127.0.0.1:9000)
  PROXY_CLIENT   httpx | aiohttp | raw  (default aiohttp; raw = hand-rolled asyncio+httptools client)

Apps:
  proxy:app            raw ASGI (no framework)
  proxy:starlette_app  the same forwarding logic behind a Starlette Route / Request / Response

What it does per request: read the body from ASGI receive, parse it with orjson (the gateway
will need the parsed request), forward the original bytes with a whitelist of request headers
over a pooled keep-alive client, relay status + response headers (hop-by-hop ones dropped) and
either the whole body (JSON) or each chunk as it arrives (SSE).
"""

from __future__ import annotations

import os

import orjson

UPSTREAM = os.environ.get("UPSTREAM_URL", "http://127.0.0.1:9000").rstrip("/")
CLIENT = os.environ.get("PROXY_CLIENT", "aiohttp")
URL = UPSTREAM + "/v1/messages"

FORWARD_REQ = frozenset(
    {b"content-type", b"x-api-key", b"authorization", b"anthropic-version", b"anthropic-beta", b"accept"}
)
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"te",
        b"trailer",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"date",
        b"server",
    }
)
STREAM_DROP = HOP_BY_HOP | {b"content-length"}
BAD_JSON = b'{"type":"error","error":{"type":"invalid_request_error","message":"invalid JSON body"}}'
JSON_CT = [(b"content-type", b"application/json")]


def _relay_headers(raw, drop) -> list[tuple[bytes, bytes]]:
    # ASGI wants lower-case names; both clients hand back the raw (case-preserving) bytes.
    out = []
    for k, v in raw:
        lk = k.lower()
        if lk not in drop:
            out.append((lk, v))
    return out


class HttpxBackend:
    def __init__(self) -> None:
        import httpx

        self.client = httpx.AsyncClient(
            http1=True,
            http2=False,
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=64, keepalive_expiry=30),
            timeout=httpx.Timeout(600.0, connect=5.0),
            headers={"accept-encoding": "identity"},  # relay bytes untouched
        )

    async def open(self, body: bytes, headers: list[tuple[bytes, bytes]]):
        req = self.client.build_request("POST", URL, content=body, headers=headers)
        resp = await self.client.send(req, stream=True)
        return resp.status_code, resp.headers.raw, resp

    @staticmethod
    async def read_all(resp) -> bytes:
        try:
            return b"".join([c async for c in resp.aiter_raw()])
        finally:
            await resp.aclose()

    @staticmethod
    def iter_chunks(resp):
        return resp.aiter_raw()

    @staticmethod
    async def close(resp) -> None:
        await resp.aclose()


class AiohttpBackend:
    def __init__(self) -> None:
        import aiohttp

        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=64, limit_per_host=64, keepalive_timeout=30, ttl_dns_cache=None),
            auto_decompress=False,  # relay bytes untouched
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
        )

    async def open(self, body: bytes, headers: list[tuple[bytes, bytes]]):
        hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in headers}
        resp = await self.session.request("POST", URL, data=body, headers=hdrs)
        return resp.status, resp.raw_headers, resp

    @staticmethod
    async def read_all(resp) -> bytes:
        try:
            return await resp.read()
        finally:
            resp.release()

    @staticmethod
    def iter_chunks(resp):
        return resp.content.iter_any()

    @staticmethod
    async def close(resp) -> None:
        resp.release()


class _Conn:
    """One keep-alive HTTP/1.1 connection: asyncio protocol + httptools response parser."""

    def __init__(self, loop) -> None:
        import httptools

        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.transport = None
        self.alive = True
        self.exc: BaseException | None = None
        self.start()

    def start(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: list[bytes] = []
        self.done = self.keep = False
        self.head = self.loop.create_future()
        self.waiter = None

    # asyncio.Protocol
    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as e:
            self.transport.close()
            self.connection_lost(e)

    def connection_lost(self, exc) -> None:
        self.alive = False
        if not self.done:
            self.exc = exc or ConnectionError("upstream closed the connection")
            if not self.head.done():
                self.head.set_exception(self.exc)
            self._wake()

    def eof_received(self):
        return None

    def pause_writing(self) -> None:  # request bodies are small; nothing to throttle
        pass

    def resume_writing(self) -> None:
        pass

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.head.set_result(self.parser.get_status_code())

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self._wake()

    def on_message_complete(self) -> None:
        self.done = True
        self.keep = self.parser.should_keep_alive()
        self._wake()

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def iter_chunks(self):
        while True:
            if self.chunks:
                chunks, self.chunks = self.chunks, []
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif self.done:
                return
            elif self.exc is not None:
                raise self.exc
            else:
                self.waiter = self.loop.create_future()
                await self.waiter
                self.waiter = None


class RawBackend:
    """Hand-rolled pooled HTTP/1.1 client (asyncio protocol + httptools), to price the client libraries."""

    def __init__(self) -> None:
        from urllib.parse import urlsplit

        u = urlsplit(UPSTREAM)
        self.host, self.port = u.hostname, u.port or 80
        self.prefix = b"POST /v1/messages HTTP/1.1\r\nhost: " + u.netloc.encode() + b"\r\n"
        self.idle: list[_Conn] = []

    async def _connect(self) -> _Conn:
        import asyncio

        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(lambda: _Conn(loop), self.host, self.port)
        return conn

    async def open(self, body: bytes, headers: list[tuple[bytes, bytes]]):
        head = [self.prefix, b"content-length: ", str(len(body)).encode(), b"\r\n"]
        for k, v in headers:
            head += (k, b": ", v, b"\r\n")
        head += (b"\r\n", body)
        data = b"".join(head)  # one write: no Nagle / delayed-ACK interplay
        for _ in range(2):  # retry once if a pooled connection turned out to be stale
            reused = bool(self.idle)
            conn = self.idle.pop() if reused else await self._connect()
            if not conn.alive:
                continue
            conn.start()
            conn.transport.write(data)
            try:
                status = await conn.head
            except (ConnectionError, OSError):
                if reused:
                    continue
                raise
            return status, conn.headers, conn
        raise ConnectionError("upstream unavailable")

    async def read_all(self, conn: _Conn) -> bytes:
        try:
            return b"".join([c async for c in conn.iter_chunks()])
        finally:
            await self.close(conn)

    @staticmethod
    def iter_chunks(conn: _Conn):
        return conn.iter_chunks()

    async def close(self, conn: _Conn) -> None:
        if conn.done and conn.keep and conn.alive and len(self.idle) < 64:
            self.idle.append(conn)
        else:
            conn.alive = False
            conn.transport.close()


_backend = None


def backend():
    # Created lazily on first request so it binds to the server's running event loop.
    global _backend
    if _backend is None:
        _backend = {"httpx": HttpxBackend, "aiohttp": AiohttpBackend, "raw": RawBackend}[CLIENT]()
    return _backend


async def _read_body(receive) -> bytes:
    msg = await receive()
    body = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    while msg.get("more_body"):
        msg = await receive()
        parts.append(msg.get("body", b""))
    return b"".join(parts)


async def _lifespan(receive, send) -> None:
    while True:
        msg = await receive()
        if msg["type"] == "lifespan.startup":
            backend()
            await send({"type": "lifespan.startup.complete"})
        elif msg["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
        return
    if scope["path"] != "/v1/messages" or scope["method"] != "POST":
        await send({"type": "http.response.start", "status": 404, "headers": JSON_CT})
        await send({"type": "http.response.body", "body": b"{}"})
        return
    raw = await _read_body(receive)
    try:
        req = orjson.loads(raw)
    except orjson.JSONDecodeError:
        await send({"type": "http.response.start", "status": 400, "headers": JSON_CT})
        await send({"type": "http.response.body", "body": BAD_JSON})
        return
    fwd = [(k, v) for k, v in scope["headers"] if k in FORWARD_REQ]
    be = backend()
    status, raw_headers, resp = await be.open(raw, fwd)
    if req.get("stream") is True:
        headers = _relay_headers(raw_headers, STREAM_DROP)
        try:
            await send({"type": "http.response.start", "status": status, "headers": headers})
            async for chunk in be.iter_chunks(resp):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await be.close(resp)
        await send({"type": "http.response.body", "body": b""})
    else:
        body = await be.read_all(resp)
        # Re-set content-length from the bytes we relay (uvicorn would otherwise fall back to chunked).
        headers = _relay_headers(raw_headers, STREAM_DROP)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


# --- Starlette-routed variant (same client code), to price the framework layer -------------------
def _make_starlette():
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route

    async def messages(request: Request) -> Response:
        raw = await request.body()
        try:
            req = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return Response(BAD_JSON, status_code=400, media_type="application/json")
        fwd = [(k, v) for k, v in request.headers.raw if k in FORWARD_REQ]
        be = backend()
        status, raw_headers, resp = await be.open(raw, fwd)
        hdrs = {k.decode("latin-1"): v.decode("latin-1") for k, v in _relay_headers(raw_headers, STREAM_DROP)}
        if req.get("stream") is True:

            async def gen():
                try:
                    async for chunk in be.iter_chunks(resp):
                        yield chunk
                finally:
                    await be.close(resp)

            return StreamingResponse(gen(), status_code=status, headers=hdrs)
        body = await be.read_all(resp)
        return Response(body, status_code=status, headers=hdrs)

    @asynccontextmanager
    async def lifespan(_app):
        backend()
        yield

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])], lifespan=lifespan)


starlette_app = _make_starlette()
