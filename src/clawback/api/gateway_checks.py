"""What the gateway (and the in-process wrapper) check before a Messages request enters the pipeline.

Only what the gateway itself must understand to be correct, nothing the API checks for us: the body is a JSON
object (``parse_json_body``), it is within ``gateway.max_body_bytes`` (``read_body``), and ``stream``, which
decides whether the reply is relayed as SSE, is a boolean when given. Everything else (message roles, block
types, fields this code has never heard of, even a missing ``model``) goes to the upstream untouched, and the
upstream's own error reaches the client unmodified. The API grows every month; a gateway that validates more
strictly than the upstream breaks on each release (issue 20: ``role: "system"`` messages, refused here while the
API accepted them, broke every current Claude Code).

Stages read the body through the defensive views of ``clawback.api.messages`` and leave alone what they cannot
reason about (pruning checks the shape it rewrites, ``clawback.pipeline.pruning.stage``). The simulator's
check, which is the API's, is ``validate_messages_request``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clawback.api.errors import InvalidRequestError

__all__ = ["check_gateway_request"]


def check_gateway_request(body: Mapping[str, Any]) -> None:
    """Raise ``InvalidRequestError`` (the API's wording) only for what the gateway cannot forward correctly."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise InvalidRequestError("stream: Input should be a valid boolean")
