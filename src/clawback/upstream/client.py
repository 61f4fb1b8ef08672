"""The one pooled HTTP client a process uses to reach the upstream.

aiohttp was chosen over httpx by measurement (``docs/performance.md``): its per-request overhead is a fraction
of httpx's, which decides whether the gateway adds under a millisecond. Connections are kept alive and pooled
per process; limits and timeouts come from ``UpstreamSettings``. No HTTP/2: aiohttp speaks HTTP/1.1 only, and
with pooled keep-alive connections HTTP/1.1 adds no handshake per request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from yarl import URL

from clawback.api.errors import ApiError, ApiTimeoutError, ServerError
from clawback.config import UpstreamSettings

__all__ = ["UpstreamClient", "UpstreamResponse", "UpstreamUnavailable"]


class UpstreamUnavailable(ServerError):
    """The upstream could not be reached, or broke the connection: a 502 with the reason."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=502)


@dataclass(slots=True)
class UpstreamResponse:
    status: int
    headers: list[tuple[str, str]]
    _response: aiohttp.ClientResponse
    _timeout: float

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self._timeout) from None
        finally:
            self._response.release()

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        """Bytes as they arrive, without waiting for any framing: the relay must not buffer."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self._timeout) from None

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), from aiohttp's parsed headers (a lookup, not a scan)."""
        return self._response.headers.get(name)

    def close(self) -> None:
        """Drop the connection (used when the client went away mid-stream: the upstream call is cancelled)."""
        self._response.close()

    def release(self) -> None:
        self._response.release()


def _translate(exc: BaseException, read_timeout: float) -> ApiError:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return ApiTimeoutError(f"The upstream did not answer within {read_timeout:g} s.")
    return UpstreamUnavailable(f"The upstream could not be reached: {exc.__class__.__name__}: {exc}")


class UpstreamClient:
    def __init__(self, base_url: str, settings: UpstreamSettings) -> None:
        self.base_url = base_url.rstrip("/")
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        # Created lazily, inside the running event loop that will use it.
        if self._session is None or self._session.closed:
            s = self.settings
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=s.max_connections, keepalive_timeout=30, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=s.connect_timeout_s, sock_read=s.read_timeout_s),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._session

    async def send(
        self, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes | None
    ) -> UpstreamResponse:
        """Send one request; the response body is read (or streamed) by the caller."""
        url = URL(self.base_url + path + (f"?{query}" if query else ""), encoded=True)
        try:
            response = await self._open().request(method, url, headers=headers, data=body, allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _translate(exc, self.settings.read_timeout_s) from None
        relayed = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers]
        return UpstreamResponse(response.status, relayed, response, self.settings.read_timeout_s)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
