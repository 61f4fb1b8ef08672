"""Anthropic-shaped errors.

Every failure a client can see is one of the API's documented error types, with the status code the real
API uses for it, wrapped in the envelope ``{"type": "error", "error": {...}, "request_id": ...}``. Clients
(the official SDKs, Claude Code) decide whether to retry from the status and the ``error.type``, so both
front doors and the simulator raise these and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import orjson

__all__ = [
    "ERROR_STATUS",
    "ApiError",
    "ApiTimeoutError",
    "AuthenticationError",
    "BillingError",
    "BudgetExceededError",
    "BudgetUnavailableError",
    "ConflictError",
    "InvalidRequestError",
    "NotFoundError",
    "OverloadedError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTooLargeError",
    "ServerError",
    "error_body",
    "error_from_status",
]

#: Documented error types and their HTTP status codes.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def error_body(error_type: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """The JSON envelope the API sends for an error."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }


class ApiError(Exception):
    """An error a client should see as an Anthropic error envelope."""

    error_type: ClassVar[str] = "api_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = dict(details) if details else None
        """``error.details`` (the API sends ``{"error_code": "enforced_spend_limit_reached"}`` on a spend limit)."""
        self.status = status if status is not None else ERROR_STATUS[self.error_type]
        self.headers: dict[str, str] = dict(headers or {})
        self.upstream_request_id: str | None = None
        """Set when the upstream had accepted the request (its ``request-id`` arrived) before the failure."""

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        body = error_body(self.error_type, self.message, request_id)
        if self.details:
            body["error"]["details"] = self.details
        return body

    def json_bytes(self, request_id: str | None = None) -> bytes:
        return orjson.dumps(self.body(request_id))


class InvalidRequestError(ApiError):
    error_type = "invalid_request_error"


class AuthenticationError(ApiError):
    error_type = "authentication_error"


class BillingError(ApiError):
    error_type = "billing_error"


class PermissionDeniedError(ApiError):
    error_type = "permission_error"


class NotFoundError(ApiError):
    error_type = "not_found_error"


class ConflictError(ApiError):
    error_type = "conflict_error"


class RequestTooLargeError(ApiError):
    error_type = "request_too_large"


class RateLimitError(ApiError):
    error_type = "rate_limit_error"


class BudgetExceededError(RateLimitError):
    """A clawback budget refused the request: 429 ``rate_limit_error``, as the API's own spend limit does.

    ``x-should-retry: false`` because retrying cannot help before the window resets, and the SDKs (and Claude
    Code) otherwise retry every 429; no ``retry-after`` for the same reason (the API omits it on spend caps).
    """

    def __init__(self, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        details = {"error_code": "clawback_budget_exceeded", **(details or {})}
        super().__init__(message, headers={"x-should-retry": "false"}, details=details)


class BudgetUnavailableError(ApiError):
    """The budget counters cannot be reached and a budget says fail closed: 503, worth retrying shortly."""

    error_type = "api_error"

    def __init__(self, message: str) -> None:
        super().__init__(message, status=503, headers={"x-should-retry": "true", "retry-after": "1"})


class ServerError(ApiError):
    error_type = "api_error"


class ApiTimeoutError(ApiError):
    """A 504 ``timeout_error`` (named so that it does not shadow the built-in ``TimeoutError``)."""

    error_type = "timeout_error"


class OverloadedError(ApiError):
    error_type = "overloaded_error"


_BY_TYPE: dict[str, type[ApiError]] = {
    cls.error_type: cls
    for cls in (
        InvalidRequestError,
        AuthenticationError,
        BillingError,
        PermissionDeniedError,
        NotFoundError,
        ConflictError,
        RequestTooLargeError,
        RateLimitError,
        ServerError,
        ApiTimeoutError,
        OverloadedError,
    )
}


def error_from_status(status: int, message: str, error_type: str | None = None) -> ApiError:
    """Build the error class matching an upstream ``error.type`` (or, failing that, its status)."""
    if error_type in _BY_TYPE:
        return _BY_TYPE[error_type](message, status=status)
    for etype, code in ERROR_STATUS.items():
        if code == status:
            return _BY_TYPE[etype](message, status=status)
    return ServerError(message, status=status)
