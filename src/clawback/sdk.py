"""The in-process front door: ``clawback.wrap(client)`` puts the pipeline under an Anthropic SDK client.

The wrapper is an ``httpx2`` transport handed to ``client.with_options(http_client=…)``. The SDK still builds
every request and parses every response into its own types, so every SDK feature works unchanged. Each request
to the client's ``base_url`` is taken in by ``front.intake`` (pass-through mode: the caller's key goes upstream
as sent, the ledger names it by a hash) and runs through the pipeline built by ``front.assembly``
(``messages``, ``count_tokens``) or is forwarded as is; the reply goes back as an ``httpx2.Response`` (JSON,
SSE relayed as it arrives, errors with the upstream's status and body, so the SDK raises its own exceptions).
``close()`` flushes the ledger.

Why below the SDK rather than its ``middleware=`` hook: clawback then replaces only the wire, in bytes, and
never forges SDK internals. Where the pipeline runs (sync and async), abandoned requests, primed streams and
the shared ledger writer: ``docs/wrapper.md``.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx2
import orjson

from clawback.api.errors import ApiError, ApiTimeoutError
from clawback.config import GatewaySettings, LedgerSettings, Settings
from clawback.front.assembly import assemble, open_ledger
from clawback.front.auth import Authenticator
from clawback.front.intake import PIPELINE_PATHS, Intake
from clawback.pipeline.context import Reply, RequestContext, new_request_id
from clawback.pipeline.dispatch.batches import book_batch_results
from clawback.pipeline.forward import Forwarder
from clawback.storage.ledger import LedgerWriter
from clawback.upstream.client import UpstreamClient, UpstreamUnavailable

__all__ = ["wrap"]

log = logging.getLogger("clawback.sdk")

ClientT = TypeVar("ClientT", anthropic.Anthropic, anthropic.AsyncAnthropic)
T = TypeVar("T")


def wrap(client: ClientT, *, settings: Settings | None = None, labels: Mapping[str, str] | None = None) -> ClientT:
    """A copy of ``client`` whose requests run through clawback's pipeline and land in its ledger.

    ``client`` is an ``anthropic.Anthropic`` or ``anthropic.AsyncAnthropic``; the returned client is of the
    same class with the same options (key, base URL, retries, timeouts, headers), and ``client`` itself is
    left untouched. ``settings`` configures the ledger, pricing and upstream limits (default ``Settings()``:
    ``CLAWBACK_*`` variables, else a ledger in ``./clawback.db``); the upstream is always the client's own
    ``base_url``. ``labels`` tag every request in the ledger: ``user``, ``team``, ``feature``, ``session_id``
    and ``agent_id`` fill those columns, anything else goes to the row's labels. A request may override
    them with the gateway's headers (``x-clawback-feature``, ``x-clawback-user``, Claude Code's session
    headers) via ``extra_headers``. Close the returned client (``close()`` / ``await close()`` or a ``with``
    block) to flush the ledger.
    """
    tags = _check_labels(labels)
    settings = settings or Settings()
    if isinstance(client, anthropic.AsyncAnthropic):
        core = _Core(settings, client.base_url, tags)
        return client.with_options(http_client=anthropic.DefaultAsyncHttpxClient(transport=_AsyncTransport(core)))
    if isinstance(client, anthropic.Anthropic):
        core = _Core(settings, client.base_url, tags)
        return client.with_options(http_client=anthropic.DefaultHttpxClient(transport=_SyncTransport(core)))
    raise TypeError(f"clawback.wrap expects anthropic.Anthropic or anthropic.AsyncAnthropic, got {type(client)!r}")


def _check_labels(labels: Mapping[str, str] | None) -> dict[str, str]:
    tags = dict(labels or {})
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"labels must map str to str, got {key!r}: {value!r}")
    return tags


# -- the ledger, shared per database and journal --------------------------------------------------------


class _SharedLedgers:
    """One open ``LedgerWriter`` per (database, journal), reference-counted across wrapped clients."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._writers: dict[tuple[str, str], tuple[LedgerWriter, int]] = {}

    @staticmethod
    def _key(settings: LedgerSettings) -> tuple[str, str]:
        return settings.url, str(Path(settings.journal_path).resolve())

    def acquire(self, settings: LedgerSettings) -> LedgerWriter:
        key = self._key(settings)
        with self._lock:
            entry = self._writers.get(key)
            if entry is None:
                writer = open_ledger(settings)
                writer.open()
                entry = (writer, 0)
            self._writers[key] = (entry[0], entry[1] + 1)
            return entry[0]

    def release(self, writer: LedgerWriter) -> None:
        """Store everything this wrapper recorded; close the writer when its last user is gone."""
        with self._lock:
            key = next((k for k, (w, _) in self._writers.items() if w is writer), None)
            if key is None:
                return
            _, users = self._writers[key]
            if users > 1:
                self._writers[key] = (writer, users - 1)
            else:
                del self._writers[key]
                users = 0
        if users:
            writer.flush()
        else:
            writer.close()

    def close_all(self) -> None:
        with self._lock:
            writers = [w for w, _ in self._writers.values()]
            self._writers.clear()
        for writer in writers:
            writer.close()


_ledgers = _SharedLedgers()
atexit.register(_ledgers.close_all)


# -- the pipeline side ----------------------------------------------------------------------------------


class _Chunks:
    """A streamed reply's bytes, already started (primed with the first chunk).

    An async generator that never started does not run its ``finally`` when closed; the relay's
    ``finally`` is where the upstream connection is released and the ledger records the stream. Priming
    makes ``aclose`` always reach it, also for a stream the caller closes without reading.
    """

    def __init__(self, stream: AsyncIterator[bytes], read_timeout: float | None) -> None:
        self._stream = stream
        self._read_timeout = read_timeout
        self._first: bytes | None = None
        self._done = False

    async def prime(self) -> None:
        self._first = await self._pull()

    async def next(self) -> bytes | None:
        """The next chunk, or None at the end; the SDK's read timeout applies between chunks."""
        if self._first is not None:
            chunk, self._first = self._first, None
            return chunk
        return await self._pull()

    async def _pull(self) -> bytes | None:
        if self._done:
            return None
        try:
            async with asyncio.timeout(self._read_timeout):
                return await anext(self._stream)
        except StopAsyncIteration:
            self._done = True
            return None
        except TimeoutError:  # the relay was cancelled inside: it closed the upstream and recorded
            self._done = True
            raise httpx2.ReadTimeout(f"no data from the upstream within {self._read_timeout:g} s") from None

    async def aclose(self) -> None:
        if self._done:
            return
        self._done = True
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class _Core:
    """One wrapped client's pipeline, upstream connection pool and ledger; runs on an event loop."""

    def __init__(self, settings: Settings, base_url: httpx2.URL, labels: dict[str, str]) -> None:
        self.settings = settings
        self._scheme, self._host, self._port = base_url.scheme, base_url.host, base_url.port
        self._prefix = base_url.raw_path.decode("ascii").partition("?")[0].rstrip("/")
        self._upstream_url = f"{base_url.scheme}://{base_url.netloc.decode('ascii')}{self._prefix}"
        self.ledger = _ledgers.acquire(settings.ledger)
        # The gateway's own rules for who is calling, in its pass-through mode: the caller's key goes
        # upstream as sent and the ledger names it by a hash; the gateway's tenant headers apply.
        auth = Authenticator(GatewaySettings(require_key=False, passthrough_client_keys=True), None, None)
        self.intake = Intake(auth, labels=labels, caller_credentials=True)
        assembly = assemble(settings, terminal=self._forward, ledger=self.ledger)
        self.pipeline, self.price_book = assembly.pipeline, assembly.price_book
        self._upstream: UpstreamClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._abandoned: set[asyncio.Future[Any]] = set()

    def route(self, url: httpx2.URL) -> tuple[str, str] | None:
        """``(path, query)`` relative to the upstream for a request to the client's base URL, else None."""
        if (url.scheme, url.host, url.port) != (self._scheme, self._host, self._port):
            return None
        path, _, query = url.raw_path.decode("ascii").partition("?")
        if self._prefix and not (path == self._prefix or path.startswith(self._prefix + "/")):
            return None
        return path[len(self._prefix) :] or "/", query

    def _client(self) -> UpstreamClient:
        # aiohttp's pool belongs to the loop that made it: an AsyncAnthropic used from a new loop (a second
        # asyncio.run) gets a new pool; the old one cannot be closed from here and is left to its loop.
        loop = asyncio.get_running_loop()
        if self._upstream is None or self._loop is not loop:
            self._upstream, self._loop = UpstreamClient(self._upstream_url, self.settings.upstream), loop
        return self._upstream

    async def _forward(self, ctx: RequestContext) -> Reply:
        return await Forwarder(self._client())(ctx)

    async def send(
        self,
        method: str,
        route: tuple[str, str],
        headers: list[tuple[str, str]],
        raw: bytes,
        read_timeout: float | None,
    ) -> tuple[Reply, _Chunks | None]:
        """One HTTP exchange: the reply and, for a stream, its primed chunks.

        An ``ApiError`` becomes the gateway's error reply; failing to reach the upstream becomes the
        ``httpx2`` error the SDK would have met without clawback (``APIConnectionError``/``APITimeoutError``).
        """
        path, query = route
        request_id = new_request_id()
        endpoint = PIPELINE_PATHS.get(path) if method == "POST" else None
        try:
            exchange = self._exchange(request_id, endpoint, method, path, query, headers, raw, read_timeout)
            task = asyncio.ensure_future(exchange)
            try:
                reply, chunks = await asyncio.wait_for(asyncio.shield(task), read_timeout)
            except BaseException:
                if not task.done():  # the caller gave up: let the upstream call finish and be recorded
                    self._abandon(task)
                raise
        except UpstreamUnavailable as exc:
            raise httpx2.ConnectError(str(exc)) from None
        except ApiTimeoutError as exc:
            raise httpx2.ReadTimeout(str(exc)) from None
        except TimeoutError:
            raise httpx2.ReadTimeout(f"no answer from the upstream within {read_timeout:g} s") from None
        except ApiError as exc:
            body = orjson.dumps(exc.body(request_id))
            headers = [("content-type", "application/json"), *exc.headers.items()]
            return Reply(status=exc.status, headers=headers, body=body, error_type=exc.error_type), None
        if endpoint is not None:
            Intake.stamp(reply, request_id)
        return reply, chunks

    async def _exchange(
        self,
        request_id: str,
        endpoint: str | None,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        raw: bytes,
        read_timeout: float | None,
    ) -> tuple[Reply, _Chunks | None]:
        ctx = self.intake.context(
            self.intake.caller(headers), request_id=request_id, endpoint=endpoint or "passthrough", method=method,
            path=path, query=query, headers=headers, raw=raw,
        )  # fmt: skip
        if endpoint is None:  # batches, models, files, …: forwarded unchanged, as the gateway does
            reply = await self._forward(ctx)
            book_batch_results(ctx, reply, self.price_book, [self.ledger.submit])
        else:
            reply = await self.pipeline(ctx)
        if reply.stream is None:
            return reply, None
        chunks = _Chunks(reply.stream, read_timeout)
        try:
            await chunks.prime()
        except BaseException:
            await chunks.aclose()
            raise
        return reply, chunks

    def _abandon(self, task: asyncio.Future[tuple[Reply, _Chunks | None]]) -> None:
        def finished(done: asyncio.Future[tuple[Reply, _Chunks | None]]) -> None:
            self._abandoned.discard(done)
            if done.cancelled() or done.exception() is not None:
                return
            _, chunks = done.result()
            if chunks is not None:  # nobody will read it: close it, which records it
                closing = asyncio.ensure_future(chunks.aclose())
                self._abandoned.add(closing)
                closing.add_done_callback(self._abandoned.discard)

        self._abandoned.add(task)
        task.add_done_callback(finished)

    async def aclose(self) -> None:
        """Close the pipeline's stages (their Redis clients, batch pollers, flag watcher) and the upstream pool on
        this loop, as the gateway does at shutdown; requests the caller abandoned are cancelled."""
        for task in list(self._abandoned):
            task.cancel()
        await self.pipeline.aclose()
        if self._upstream is not None and self._loop is asyncio.get_running_loop():
            await self._upstream.aclose()
        self._upstream = None

    def release_ledger(self) -> None:
        """The client is closed: give back the shared ledger (stored, and closed by its last user)."""
        _ledgers.release(self.ledger)


def _response(reply: Reply, stream: httpx2.SyncByteStream | httpx2.AsyncByteStream | None) -> httpx2.Response:
    if stream is None:
        return httpx2.Response(reply.status, headers=reply.headers, content=reply.body or b"")
    return httpx2.Response(reply.status, headers=reply.headers, stream=stream)


def _read_timeout(request: httpx2.Request) -> float | None:
    timeouts = request.extensions.get("timeout") or {}
    value = timeouts.get("read") if isinstance(timeouts, dict) else None
    return float(value) if isinstance(value, int | float) else None


# -- async: the caller's event loop ---------------------------------------------------------------------


class _AsyncStream(httpx2.AsyncByteStream):
    def __init__(self, chunks: _Chunks) -> None:
        self._chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await self._chunks.next()) is not None:
            yield chunk

    async def aclose(self) -> None:
        await self._chunks.aclose()


class _AsyncTransport(httpx2.AsyncBaseTransport):
    """``AsyncAnthropic``'s wire: the pipeline runs on the caller's loop."""

    def __init__(self, core: _Core) -> None:
        self._core = core
        self._other: httpx2.AsyncHTTPTransport | None = None
        self._closed = False

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        route = self._core.route(request.url)
        if route is None:  # not the API (a URL elsewhere): plain HTTP, as without clawback
            self._other = self._other or httpx2.AsyncHTTPTransport()
            return await self._other.handle_async_request(request)
        raw = await request.aread()
        headers = request.headers.multi_items()
        reply, chunks = await self._core.send(request.method, route, headers, raw, _read_timeout(request))
        return _response(reply, _AsyncStream(chunks) if chunks is not None else None)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._other is not None:
            await self._other.aclose()
        await self._core.aclose()
        await asyncio.to_thread(self._core.release_ledger)


# -- sync: a background event loop -------------------------------------------------------------------------


class _LoopThread:
    """An event loop on a daemon thread that synchronous callers, from any thread, submit coroutines to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="clawback-wrap", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self.loop.is_closed():
            coro.close()
            raise RuntimeError("this wrapped client is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a wrapped sync client cannot be called from its own event loop")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # a KeyboardInterrupt, say: stop the upstream call too (a no-op if it failed)
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.run(self.loop.shutdown_asyncgens())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


class _SyncStream(httpx2.SyncByteStream):
    def __init__(self, chunks: _Chunks, runner: _LoopThread) -> None:
        self._chunks = chunks
        self._runner = runner

    def __iter__(self) -> Iterator[bytes]:
        while (chunk := self._runner.run(self._chunks.next())) is not None:
            yield chunk

    def close(self) -> None:
        if not self._runner.loop.is_closed():
            self._runner.run(self._chunks.aclose())


class _SyncTransport(httpx2.BaseTransport):
    """``Anthropic``'s wire: the pipeline runs on the wrapper's own loop thread."""

    def __init__(self, core: _Core) -> None:
        self._core = core
        self._runner = _LoopThread()
        self._other: httpx2.HTTPTransport | None = None
        self._lock = threading.Lock()
        self._closed = False

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        route = self._core.route(request.url)
        if route is None:  # not the API (a URL elsewhere): plain HTTP, as without clawback
            with self._lock:
                self._other = self._other or httpx2.HTTPTransport()
            return self._other.handle_request(request)
        raw = request.read()
        headers = request.headers.multi_items()
        reply, chunks = self._runner.run(self._core.send(request.method, route, headers, raw, _read_timeout(request)))
        return _response(reply, _SyncStream(chunks, self._runner) if chunks is not None else None)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._other is not None:
            self._other.close()
        try:
            self._runner.run(self._core.aclose())
            self._runner.stop()
        finally:
            self._core.release_ledger()
