"""What travels with a request through the pipeline."""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from clawback.api.messages import MessagesRequest
from clawback.api.usage import Usage
from clawback.upstream.headers import find_header

__all__ = ["Decision", "Mode", "Reply", "RequestContext", "Savings", "Tenant", "new_request_id"]

Mode = Literal["off", "shadow", "on"]
"""How an optimization treats a request: skip it, compute and record what it would do without changing anything
the client or the upstream sees, or do it."""

_ID_PREFIX = "cbreq_" + secrets.token_hex(5)
_id_counter = itertools.count(1)


def new_request_id() -> str:
    """A unique id per request: a random per-process prefix and a counter.

    ``secrets.token_hex`` per request showed up in the gateway's profile (one ``getrandom`` syscall each).
    """
    return f"{_ID_PREFIX}{next(_id_counter):010x}"


@dataclass(slots=True)
class Tenant:
    """Who a request is billed to. ``key_id`` is a clawback key's id (or a hash of a passed-through key)."""

    key_id: str | None = None
    user: str | None = None
    team: str | None = None
    feature: str | None = None
    session_id: str | None = None
    agent_id: str | None = None
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def scope(self) -> str:
        """The partition every cache key includes: one tenant never sees another's replies."""
        return self.key_id or "anonymous"


@dataclass(slots=True)
class Savings:
    """Micro-dollars saved, by the stage that saved them."""

    by_stage: dict[str, int] = field(default_factory=dict)

    def add(self, stage: str, micro_usd: int) -> None:
        self.by_stage[stage] = self.by_stage.get(stage, 0) + micro_usd

    @property
    def total(self) -> int:
        return sum(self.by_stage.values())


@dataclass(frozen=True, slots=True)
class Decision:
    """What the flags stage decided for one request, once, as it entered the pipeline (``pipeline/flags.py``).

    Taken once so that a flag changed while the request is in flight does not change it half-way: the request
    finishes as it started. A stage with no entry in ``modes`` runs ``on`` (a pipeline without the flags stage,
    a stage the flags do not know).
    """

    modes: dict[str, Mode] = field(default_factory=dict)
    holdout: bool = False

    def mode(self, stage: str) -> Mode:
        return self.modes.get(stage, "on")

    def with_mode(self, stage: str, mode: Mode) -> Decision:
        return Decision({**self.modes, stage: mode}, self.holdout)


@dataclass(slots=True)
class RequestContext:
    """One request's state.

    ``body`` is what will be sent; ``original_body`` what the caller sent (the counterfactual's basis).
    While no stage has changed the body, ``raw_body`` holds the caller's exact bytes and is what goes
    upstream, so forwarding stays byte-for-byte. A stage that changes the request calls ``replace_body``.
    """

    request_id: str
    endpoint: str
    body: dict[str, Any]
    raw_body: bytes | None
    method: str = "POST"
    path: str = "/v1/messages"
    headers: list[tuple[str, str]] = field(default_factory=list)
    query: str = ""
    tenant: Tenant = field(default_factory=Tenant)
    decision: Decision | None = None
    """Set by the flags stage (or by a stage making a request of its own, which the flags stage then keeps)."""
    savings: Savings = field(default_factory=Savings)
    shadow_savings: Savings = field(default_factory=Savings)
    """What stages in ``shadow`` mode would have saved: recorded in the ledger, never in the counterfactual."""
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    cache_status: str | None = None
    cache_frontier: int | None = None
    """Set by pruning: the index of the last message whose prefix stays byte-identical until the next
    compaction point; the prompt-cache planner keeps a breakpoint there so a compaction rewrites only after it."""
    upstream_auth: dict[str, str] = field(default_factory=dict)
    budget_status: str | None = None
    """Set by the budget stage: reserved, downgraded, refused, fail_open or fail_closed (the ledger records it)."""
    labels: dict[str, str] = field(default_factory=dict)
    """Labels a stage adds to the request's ledger row (dispatch: its attempts), next to the tenant's."""
    batch: bool = False
    """Set by dispatch when the request was deferred to the Message Batches API: priced at batch prices."""
    derived: dict[Any, Any] = field(default_factory=dict)
    """What a stage derived from the body for the stages below to reuse (the exact cache's key, which coalescing
    needs too): one serialization and one hash per request. Cleared when the body changes, unless only its
    ``cache_control`` markers did (``replace_body(..., markers_only=True)``), which no derived value depends on."""
    original_body: dict[str, Any] = field(init=False)
    _request: MessagesRequest | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.original_body = self.body

    @property
    def request(self) -> MessagesRequest:
        """Typed reads over the body that will be sent (one view per body: the stages ask for it a dozen times a
        request; a view reads the body live, so it is reused only while ``body`` is the same object)."""
        request = self._request
        if request is None or request.body is not self.body:
            request = self._request = MessagesRequest(self.body)
        return request

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))  # ``MessagesRequest.model``, without building a view

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream", False))  # ``MessagesRequest.stream``, likewise

    def mode(self, stage: str) -> Mode:
        """How stage ``stage`` treats this request (``on`` when no flags stage decided)."""
        return "on" if self.decision is None else self.decision.mode(stage)

    def replace_body(self, body: dict[str, Any], *, markers_only: bool = False) -> None:
        self.body = body
        self.raw_body = None
        if not markers_only:
            self.derived.clear()

    def body_bytes(self) -> bytes:
        if self.raw_body is None:
            self.raw_body = orjson.dumps(self.body)
        return self.raw_body

    def header(self, name: str) -> str | None:
        """The caller's header ``name`` (any case), or None."""
        return find_header(self.headers, name)


@dataclass(slots=True)
class Reply:
    """What comes back down the pipeline.

    Exactly one of ``body`` (a whole JSON response) or ``stream`` (raw SSE bytes, relayed as they arrive)
    is set. ``usage`` is final for a JSON reply; for a stream it fills in as events pass and is final once
    the stream ends, when the close callbacks run (the ledger records there, also after a disconnect).
    They are plain functions, not coroutines: they may run while the relay is being cancelled.
    """

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    usage: Usage = field(default_factory=Usage)
    error_type: str | None = None
    ttft: float | None = None
    upstream_request_id: str | None = None
    finished: bool = False
    closing: list[Callable[[Reply], None]] = field(default_factory=list)

    def on_close(self, callback: Callable[[Reply], None]) -> None:
        """Run ``callback`` when the stream ends, after those added before it. The reply passes the stages from
        the inside out, so an inner stage's callback runs before an outer one's, and the ledger's, outermost,
        last: it records what every stage below has booked."""
        self.closing.append(callback)

    def closed(self) -> None:
        """The stream has ended (or was cut off): run the close callbacks, in order (the terminal call does)."""
        for callback in self.closing:
            callback(self)
