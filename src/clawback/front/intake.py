"""One intake for both front doors: an HTTP request, however it arrived, becomes a ``RequestContext``.

The door reads the bytes its own way (ASGI ``receive`` or the SDK's ``httpx`` request) and hands them here with
the headers; this module authenticates, parses the JSON body of the pipeline's endpoints, applies the gateway's
own checks (only what clawback needs to read the request: ``api.gateway_checks.check_gateway_request``; the
API judges the rest), builds the context and, on the way back, names the request in
``x-clawback-request-id``. Keeping it in one place is what makes the two doors book the same request the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clawback.api.gateway_checks import check_gateway_request
from clawback.api.messages import parse_json_body
from clawback.front.auth import Authenticator
from clawback.pipeline.context import Reply, RequestContext, Tenant
from clawback.upstream.headers import CREDENTIAL_HEADERS

__all__ = ["PIPELINE_PATHS", "REQUEST_ID_HEADER", "TENANT_FIELDS", "Caller", "Intake"]

#: The paths whose requests go through the pipeline, and the endpoint each is; every other path is forwarded.
PIPELINE_PATHS = {"/v1/messages": "messages", "/v1/messages/count_tokens": "count_tokens"}
REQUEST_ID_HEADER = "x-clawback-request-id"
#: Labels that are ``Tenant`` fields (and ledger columns); any other label goes to ``Tenant.labels``.
TENANT_FIELDS = ("user", "team", "feature", "session_id", "agent_id")


@dataclass(slots=True)
class Caller:
    """Who a request is billed to and the credentials it goes upstream with."""

    tenant: Tenant
    upstream_auth: dict[str, str]


class Intake:
    """A door's rules for taking in requests.

    ``auth`` decides who is calling. ``labels`` tag every request (the wrapper's ``labels=``): a ``Tenant`` field
    is filled only when no header set it, anything else goes to the tenant's labels. ``caller_credentials``: the
    credential headers the caller sent go upstream as sent (the wrapper: the key is the caller's own), instead of
    those ``auth`` chose.
    """

    def __init__(
        self, auth: Authenticator, *, labels: Mapping[str, str] | None = None, caller_credentials: bool = False
    ) -> None:
        self.auth = auth
        self.labels = dict(labels or {})
        self.caller_credentials = caller_credentials

    def caller(self, headers: Sequence[tuple[str, str]]) -> Caller:
        """Authenticate (``AuthenticationError`` when refused); the door calls it before reading the body."""
        tenant, upstream_auth = self.auth.authenticate(headers)
        for key, value in self.labels.items():
            if key in TENANT_FIELDS:
                if getattr(tenant, key) is None:  # a per-request header wins over the door's default
                    setattr(tenant, key, value)
            else:
                tenant.labels.setdefault(key, value)
        if self.caller_credentials:
            upstream_auth = {k: v for k, v in headers if k.lower() in CREDENTIAL_HEADERS}
        return Caller(tenant, upstream_auth)

    @staticmethod
    def context(
        caller: Caller,
        *,
        request_id: str,
        endpoint: str,
        method: str,
        path: str,
        query: str,
        headers: list[tuple[str, str]],
        raw: bytes,
    ) -> RequestContext:
        """The request's context. ``endpoint`` is ``PIPELINE_PATHS``' name for the path or ``"passthrough"``;
        a pipeline endpoint's body is parsed and checked here (``InvalidRequestError``), any other is kept as bytes."""
        if endpoint == "passthrough":
            return RequestContext(
                request_id=request_id, endpoint=endpoint, body={}, raw_body=raw or None, method=method, path=path,
                headers=headers, query=query, tenant=caller.tenant, upstream_auth=caller.upstream_auth,
            )  # fmt: skip
        body = parse_json_body(raw)
        if endpoint == "messages":
            check_gateway_request(body)  # only what the gateway reads: the upstream judges the rest
        return RequestContext(
            request_id=request_id, endpoint=endpoint, body=body, raw_body=raw, method=method, path=path,
            headers=headers, query=query, tenant=caller.tenant, upstream_auth=caller.upstream_auth,
        )  # fmt: skip

    @staticmethod
    def stamp(reply: Reply, request_id: str) -> None:
        """Name the request on its reply (what the ledger row is filed under)."""
        reply.headers.append((REQUEST_ID_HEADER, request_id))
