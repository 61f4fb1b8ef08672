"""The admin token check every ``/admin/…`` route sits behind (``gateway.admin_token``).

One decorator, so a new admin route cannot forget the check and no route repeats it.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from clawback.api.errors import error_body
from clawback.gateway.process import gateway_of
from clawback.gateway.routes import json_response

__all__ = ["Handler", "admin_only", "denied"]

Handler = Callable[[Request], Awaitable[Response]]


def denied(request: Request) -> Response | None:
    """None when the request carries the admin token; 404 when no token is configured (admin API off), so a
    gateway without one does not even reveal that the routes exist."""
    admin_token = gateway_of(request).settings.gateway.admin_token
    if admin_token is None:
        return json_response(error_body("not_found_error", f"{request.url.path}: the admin API is disabled "
                                        "(set gateway.admin_token)"), 404)  # fmt: skip
    sent = request.headers.get("authorization", "")
    sent = sent[7:].strip() if sent.lower().startswith("bearer ") else request.headers.get("x-admin-token", "")
    if not hmac.compare_digest(sent.encode(), admin_token.get_secret_value().encode()):
        return json_response(error_body("authentication_error", "admin API: invalid or missing admin token"), 401)
    return None


def admin_only(handler: Handler) -> Handler:
    """``handler`` behind the admin token."""

    @functools.wraps(handler)
    async def run(request: Request) -> Response:
        refused = denied(request)
        return refused if refused is not None else await handler(request)

    return run
