"""Which headers cross the gateway.

Everything the client sends goes upstream (``anthropic-beta``, ``anthropic-version``, Claude Code's session
headers, whatever comes next: never an allowlist) except what belongs to one hop only, the client's
credentials (replaced by the gateway's, unless keys are passed through), and ``accept-encoding`` (the gateway
reads usage out of every reply, so it asks for identity bodies). Everything the upstream answers goes back
except hop-by-hop headers and the framing the gateway's own server recomputes.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["CREDENTIAL_HEADERS", "find_header", "request_headers_for_upstream", "response_headers_for_client"]

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
     "proxy-authenticate", "proxy-authorization"}
)  # fmt: skip
CREDENTIAL_HEADERS = frozenset({"x-api-key", "authorization"})
_NOT_FORWARDED_UP = HOP_BY_HOP | CREDENTIAL_HEADERS | {"host", "content-length", "accept-encoding"}
_NOT_RELAYED_DOWN = HOP_BY_HOP | {"content-length", "content-encoding", "date", "server"}


def find_header(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    """The first value of header ``name`` (any case), or None."""
    name = name.lower()
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def request_headers_for_upstream(
    client_headers: Iterable[tuple[str, str]], auth: dict[str, str]
) -> list[tuple[str, str]]:
    """The client's headers, minus one-hop and credential headers, plus the upstream credentials."""
    headers = [(k, v) for k, v in client_headers if k.lower() not in _NOT_FORWARDED_UP]
    headers.extend(auth.items())
    return headers


def response_headers_for_client(upstream_headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in upstream_headers if k.lower() not in _NOT_RELAYED_DOWN]
