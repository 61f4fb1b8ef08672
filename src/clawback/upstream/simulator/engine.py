"""The simulated Messages API, independent of HTTP.

``SimulatedAPI.prepare`` does what the real API does before it answers: validate, resolve the model,
apply injected faults, account the prompt cache and the rate limits. ``Turn`` is then rendered either as
one JSON message or as the documented SSE event sequence. The message batch processor calls the same code,
so a batch request is billed exactly like a direct one (at half price).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from clawback.api.errors import (
    ApiError,
    InvalidRequestError,
    NotFoundError,
    OverloadedError,
    RateLimitError,
    ServerError,
)
from clawback.api.messages import MessagesRequest, validate_messages_request
from clawback.api.sse import encode_event
from clawback.api.usage import Usage
from clawback.config import SimulatorSettings
from clawback.pricing import PriceBook, load_price_book
from clawback.tokens import count_request_tokens
from clawback.upstream.simulator.billing import BilledRequest, BillingLog
from clawback.upstream.simulator.prompt_cache import CacheAccount, PromptCache
from clawback.upstream.simulator.ratelimit import RateLimiter, RateLimitExceeded
from clawback.upstream.simulator.replies import Reply, ReplyGenerator

__all__ = ["FAULT_HEADER", "SimulatedAPI", "Turn"]

#: Tests force a fault on one request with this header: 429, 500, 529, drop (stream ends with an
#: ``error`` event), disconnect (the connection is dropped mid-reply, after billing), spend_limit (the 429 of
#: an organisation's spend limit: no retry-after, ``error.details.error_code``), or ``delay:<ms>`` (answer late,
#: for timeout tests).
FAULT_HEADER = "x-simulator-fault"

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(slots=True)
class Turn:
    """One accepted request on its way to an answer."""

    request_id: str
    message_id: str
    body: Mapping[str, Any]
    model: str
    workspace: str
    account: CacheAccount
    reply: Reply
    headers: dict[str, str]
    batch: bool = False
    drop_stream: bool = False
    disconnect: bool = False
    counted: bool = False
    delay_s: float = 0.0
    per_token_s: float = 0.0
    usage: Usage = field(default_factory=Usage)

    def message(self) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.reply.content,
            "stop_reason": self.reply.stop_reason,
            "stop_sequence": None,
            "usage": self.usage.to_api(),
        }


class SimulatedAPI:
    def __init__(
        self,
        settings: SimulatorSettings,
        price_book: PriceBook | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.price_book = price_book or load_price_book()
        self._base_clock = clock
        self.clock_offset = 0.0  # tests move time forward (TTL expiry) with POST /_simulator/clock
        self.cache = PromptCache(clock=self.clock)
        self.limits = RateLimiter(settings, clock=self.clock)
        self.replies = ReplyGenerator(settings)
        self.log = BillingLog()
        self.rng = random.Random(settings.seed)
        self._count = 0
        self.active: dict[str, int] = {}
        """Messages in progress per workspace (``max_concurrent_requests``)."""
        self.peak_active = 0
        self.active_seconds = 0.0
        """Time-integral of the messages in progress (all workspaces): busy request-seconds, for utilisation."""
        self._active_total = 0
        self._active_since = 0.0

    def clock(self) -> float:
        return self._base_clock() + self.clock_offset

    # -- ids -----------------------------------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        """24 base62 characters, as the API's ids look; seeded, so a replay gives the same ids."""
        return prefix + "".join([_ALPHABET[b % 62] for b in self.rng.randbytes(24)])

    # -- the request path ----------------------------------------------------------------------------
    def check_model(self, model: str) -> None:
        if not self.price_book.is_known(model):
            raise NotFoundError(f"model: {model}")

    def prepare(
        self,
        body: Mapping[str, Any],
        *,
        workspace: str,
        fault: str | None = None,
        batch: bool = False,
        request_id: str | None = None,
    ) -> Turn:
        """Validate and account one request. Raises ``ApiError`` exactly where the API would answer 4xx/5xx."""
        request_id = request_id or self.new_id("req_")
        model = str(body.get("model", ""))
        try:
            validate_messages_request(body, strict=True)
            self.check_model(model)
            if batch and body.get("stream"):
                raise InvalidRequestError("stream: streaming is not supported in message batches")
            if not batch:
                self._check_concurrency(workspace)
            drop = self._apply_faults(fault, stream=bool(body.get("stream")))
            disconnect = not batch and self._disconnects(fault, stream=bool(body.get("stream")))
            price = self.price_book.get(model)
            account = self.cache.account(workspace, body, min_cacheable_tokens=price.min_cacheable_tokens)
            uncached = account.usage.input_tokens + account.usage.cache_creation_input_tokens
            try:
                headers = self.limits.acquire(
                    workspace, input_tokens=uncached, output_tokens_estimate=MessagesRequest(dict(body)).max_tokens
                )
            except RateLimitExceeded as exc:
                raise RateLimitError(
                    f"This request would exceed the rate limit for your organization of "
                    f"{self.limits.limits[exc.kind]} {exc.kind.replace('-', ' ')} per minute. "
                    "Please reduce the prompt length or the maximum tokens requested, or try again later.",
                    headers=exc.headers,
                ) from None
        except ApiError as exc:
            self.log.bill(
                BilledRequest(
                    request_id,
                    model,
                    "messages",
                    bool(body.get("stream")),
                    batch,
                    exc.status,
                    exc.error_type,
                    workspace,
                )
            )
            exc.headers.setdefault("request-id", request_id)
            raise
        self._count += 1
        reply = self.replies.generate(body, self._count)
        s = self.settings
        delay = (s.ttft_ms + self.rng.random() * s.ttft_jitter_ms) / 1000.0
        if fault and fault.startswith("delay:"):
            delay += float(fault.split(":", 1)[1]) / 1000.0
        headers["request-id"] = request_id
        if not batch:
            self._active_changed(+1)
            self.active[workspace] = active = self.active.get(workspace, 0) + 1
            self.peak_active = max(self.peak_active, active)
        return Turn(
            request_id=request_id,
            message_id=self.new_id("msg_"),
            body=body,
            model=model,
            workspace=workspace,
            account=account,
            reply=reply,
            headers=headers,
            batch=batch,
            drop_stream=drop,
            disconnect=disconnect,
            counted=not batch,
            delay_s=delay,
            per_token_s=s.per_token_ms / 1000.0,
        )

    def _check_concurrency(self, workspace: str) -> None:
        """The 429 the API answers past a concurrency limit (its message, as clients have reported it)."""
        limit = self.settings.max_concurrent_requests
        if limit is not None and self.active.get(workspace, 0) >= limit:
            raise RateLimitError(
                "Number of concurrent connections has exceeded your rate limit. Please try again later or "
                "contact sales at https://www.anthropic.com/contact-sales to discuss your options for a rate limit "
                "increase.",
                headers={**self.limits.headers(workspace), "retry-after": "1"},
            )

    def leave(self, turn: Turn) -> None:
        """The reply is over (sent, dropped or abandoned): the request no longer counts as in progress."""
        if turn.counted:
            turn.counted = False
            self._active_changed(-1)
            self.active[turn.workspace] = self.active.get(turn.workspace, 1) - 1

    def reset_concurrency_stats(self) -> None:
        self._active_changed(0)
        self.peak_active = self._active_total
        self.active_seconds = 0.0

    def _active_changed(self, delta: int) -> None:
        now = self._base_clock()
        if self._active_total:
            self.active_seconds += self._active_total * (now - self._active_since)
        self._active_total += delta
        self._active_since = now

    def _disconnects(self, fault: str | None, *, stream: bool) -> bool:
        if fault == "disconnect":
            return True
        rate = self.settings.connection_drop_rate
        return not stream and rate > 0 and self.rng.random() < rate

    def _apply_faults(self, fault: str | None, *, stream: bool) -> bool:
        """Raise an injected error; return True when the stream should break mid-way."""
        s = self.settings
        roll = self.rng.random() if (s.error_rate_429 or s.error_rate_500 or s.error_rate_529) else 1.0
        if fault == "429" or roll < s.error_rate_429:
            raise RateLimitError(
                "Number of requests has exceeded your rate limit (simulated).", headers={"retry-after": "1"}
            )
        if fault == "spend_limit":
            raise RateLimitError(
                "You have reached your specified workspace API usage limits. You will regain access on the first "
                "of next month at 00:00 UTC.",
                details={"error_code": "enforced_spend_limit_reached"},
            )
        roll -= s.error_rate_429
        if fault == "500" or 0 <= roll < s.error_rate_500:
            raise ServerError("Internal server error (simulated).")
        roll -= s.error_rate_500
        if fault == "529" or 0 <= roll < s.error_rate_529:
            raise OverloadedError("Overloaded (simulated).")
        if fault == "drop":
            return True
        return stream and s.stream_drop_rate > 0 and self.rng.random() < s.stream_drop_rate

    def begin(self, turn: Turn) -> None:
        """The response has begun: cache writes become readable, usage is fixed (before any output)."""
        self.cache.activate(turn.account)
        turn.usage = Usage(
            input_tokens=turn.account.usage.input_tokens,
            cache_read_input_tokens=turn.account.usage.cache_read_input_tokens,
            cache_write_5m_input_tokens=turn.account.usage.cache_write_5m_input_tokens,
            cache_write_1h_input_tokens=turn.account.usage.cache_write_1h_input_tokens,
            output_tokens=0,
        )

    def finish(self, turn: Turn, output_tokens: int, *, status: int = 200, error_type: str | None = None) -> None:
        """Bill the request with the output generated so far."""
        turn.usage = Usage(
            turn.usage.input_tokens,
            output_tokens,
            turn.usage.cache_read_input_tokens,
            turn.usage.cache_write_5m_input_tokens,
            turn.usage.cache_write_1h_input_tokens,
        )
        self.limits.settle_output(turn.workspace, output_tokens)
        request = MessagesRequest(dict(turn.body))
        cost = self.price_book.cost(
            turn.model,
            turn.usage,
            batch=turn.batch,
            inference_geo=request.inference_geo,
            speed=request.speed,
        )
        self.log.bill(
            BilledRequest(
                turn.request_id,
                turn.model,
                "messages",
                bool(turn.body.get("stream")),
                turn.batch,
                status,
                error_type,
                turn.workspace,
                turn.usage,
                cost.micro_usd,
            )
        )

    # -- rendering -----------------------------------------------------------------------------------
    async def complete(self, turn: Turn) -> dict[str, Any]:
        """The whole message, after the simulated generation time."""
        total = turn.delay_s + turn.per_token_s * turn.reply.output_tokens
        if total > 0:
            await asyncio.sleep(total)
        self.begin(turn)
        self.finish(turn, turn.reply.output_tokens)
        return turn.message()

    async def stream_chunks(self, turn: Turn) -> AsyncIterator[bytes]:
        """The event stream as the network carries it: with no per-token delay, the events that are ready
        together leave in one write (as a real server's do), instead of one write and one syscall per event,
        which made the simulator, not the gateway, the bottleneck of streaming benchmarks."""
        events = self.stream(turn)
        try:
            if turn.per_token_s:
                async for frame in events:
                    yield frame
            else:
                yield b"".join([frame async for frame in events])
        finally:
            await events.aclose()

    async def stream(self, turn: Turn) -> AsyncGenerator[bytes, None]:
        """The documented event sequence, one frame at a time; the usage in ``message_delta`` is cumulative.

        If the client goes away, the generator is closed: the output sent so far is billed.
        """
        if turn.delay_s > 0:
            await asyncio.sleep(turn.delay_s)
        self.begin(turn)
        start = turn.message()
        start["content"] = []
        start["stop_reason"] = None
        start["usage"] = {**turn.usage.to_api(), "output_tokens": 1}
        emitted = 1
        billed = False
        try:
            yield encode_event("message_start", {"type": "message_start", "message": start})
            yield encode_event("ping", {"type": "ping"})
            blocks = turn.reply.content
            share = max(1, turn.reply.output_tokens // max(1, sum(len(c) or 1 for c in turn.reply.text_chunks)))
            for index, block in enumerate(blocks):
                chunks = turn.reply.text_chunks[index] if index < len(turn.reply.text_chunks) else []
                async for frame in self._block_events(turn, index, block, chunks):
                    yield frame
                    emitted = min(turn.reply.output_tokens, emitted + share)
                if turn.drop_stream:
                    billed = True
                    self.finish(turn, emitted, status=200, error_type="overloaded_error")
                    yield encode_event(
                        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
                    )
                    return
            usage = {**turn.usage.to_api(), "output_tokens": turn.reply.output_tokens}
            delta = {"stop_reason": turn.reply.stop_reason, "stop_sequence": None}
            yield encode_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
            yield encode_event("message_stop", {"type": "message_stop"})
            billed = True
            self.finish(turn, turn.reply.output_tokens)
        finally:
            if not billed:
                self.finish(turn, emitted, status=499, error_type="client_disconnected")

    async def _block_events(
        self, turn: Turn, index: int, block: dict[str, Any], chunks: list[str]
    ) -> AsyncIterator[bytes]:
        kind = block["type"]
        if kind == "text":
            yield _block_start(index, {"type": "text", "text": ""})
            for piece in chunks:
                if turn.per_token_s:
                    await asyncio.sleep(turn.per_token_s * 3)
                yield _delta(index, {"type": "text_delta", "text": piece})
        elif kind == "thinking":
            yield _block_start(index, {"type": "thinking", "thinking": "", "signature": ""})
            for piece in chunks:
                yield _delta(index, {"type": "thinking_delta", "thinking": piece})
            yield _delta(index, {"type": "signature_delta", "signature": block["signature"]})
        elif kind == "tool_use":
            yield _block_start(index, {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}})
            raw = orjson.dumps(block["input"]).decode()
            step = max(1, len(raw) // 3)
            for i in range(0, len(raw), step):
                yield _delta(index, {"type": "input_json_delta", "partial_json": raw[i : i + step]})
        yield encode_event("content_block_stop", {"type": "content_block_stop", "index": index})


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    return encode_event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})


def _delta(index: int, delta: dict[str, Any]) -> bytes:
    return encode_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def count_tokens(body: Mapping[str, Any], api: SimulatedAPI) -> dict[str, int]:
    validate_messages_request({**body, "max_tokens": 1}, strict=False)
    api.check_model(str(body.get("model")))
    return {"input_tokens": count_request_tokens(body)}
