"""Messages API shapes shared by the gateway, the wrapper and the simulator."""

from clawback.api.errors import (
    ERROR_STATUS,
    ApiError,
    AuthenticationError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    RateLimitError,
    RequestTooLargeError,
    ServerError,
    error_body,
)
from clawback.api.messages import (
    MessagesRequest,
    count_cache_breakpoints,
    iter_prompt_blocks,
    parse_json_body,
    validate_messages_request,
)
from clawback.api.sse import ServerSentEvent, SSEParser, encode_event
from clawback.api.usage import Usage

__all__ = [
    "ERROR_STATUS",
    "ApiError",
    "AuthenticationError",
    "InvalidRequestError",
    "MessagesRequest",
    "NotFoundError",
    "OverloadedError",
    "RateLimitError",
    "RequestTooLargeError",
    "SSEParser",
    "ServerError",
    "ServerSentEvent",
    "Usage",
    "count_cache_breakpoints",
    "encode_event",
    "error_body",
    "iter_prompt_blocks",
    "parse_json_body",
    "validate_messages_request",
]
