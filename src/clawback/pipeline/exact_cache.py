"""The exact response cache stage: an identical request, within one tenant, never reaches the API twice.

The key is the normalized request (``normalized_request``: what can change the answer) inside the tenant's scope
and a namespace, so one tenant never sees another's reply. Eligibility: the ``x-clawback-cache`` header, then
``exact_cache.keys``, then ``exact_cache.features``, then ``default_policy`` (``"deterministic"``: only requests
that pin sampling). A hit is answered as JSON or as the documented SSE sequence and booked at cost 0 with
``savings["exact_cache"]`` = what the stored call cost the caller (its usage priced, plus what the stages below
saved on it); only finished replies whose blocks can be replayed faithfully are stored.

Why that default: Claude's replies are sampled, and a wrong hit is a silent correctness bug the caller cannot
see, while a miss costs only what the request would have cost anyway. Headers, rules and replay in detail:
``docs/exact-cache.md``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson

from clawback.api.sse import SSEParser, encode_event
from clawback.api.usage import Usage
from clawback.config import ExactCacheSettings
from clawback.pipeline.context import Mode, Reply, RequestContext
from clawback.pipeline.stage import CallNext, Chain
from clawback.pricing import PriceBook
from clawback.storage.response_cache import CachedReply, MemoryResponseCache, RedisResponseCache, ResponseCache

__all__ = [
    "CACHE_HEADER",
    "NAMESPACE_HEADER",
    "TAGS_HEADER",
    "TTL_HEADER",
    "ExactCacheStage",
    "assemble_message",
    "cache_eligibility",
    "cache_key",
    "hit_saving",
    "make_response_cache",
    "normalized_request",
    "replay_entry",
    "replay_sse",
    "request_key",
    "requested_ttl",
    "storable_message",
    "tee_message",
]

log = logging.getLogger("clawback.exact_cache")

CACHE_HEADER = "x-clawback-cache"
NAMESPACE_HEADER = "x-clawback-cache-namespace"
TAGS_HEADER = "x-clawback-cache-tags"
TTL_HEADER = "x-clawback-cache-ttl"

_NOT_KEYED = frozenset({"metadata", "stream", "cache_control"})
_REPLAYABLE_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
_STORED_STOPS = frozenset({"end_turn", "max_tokens", "stop_sequence", "tool_use"})
_ON = frozenset({"on", "true", "1", "yes"})
_OFF = frozenset({"off", "false", "0", "no", "bypass", "no-store"})


def make_response_cache(settings: ExactCacheSettings) -> ResponseCache:
    if settings.backend == "redis":
        return RedisResponseCache(settings.redis_url, max_bytes=settings.max_bytes, prefix=settings.redis_prefix,
                                  timeout_s=settings.redis_timeout_s)  # fmt: skip
    return MemoryResponseCache(max_bytes=settings.max_bytes)


# ------------------------------------------------------------------------------------------------ the key


def _strip_block(block: Any) -> Any:
    if not isinstance(block, dict):
        return block
    if "cache_control" in block:
        block = {k: v for k, v in block.items() if k != "cache_control"}
    content = block.get("content")
    if isinstance(content, list) and any(isinstance(c, dict) and "cache_control" in c for c in content):
        block = {**block, "content": [_strip_block(c) for c in content]}
    return block


def _blocks(value: Any) -> Any:
    if isinstance(value, str):
        return [{"type": "text", "text": value}]
    if isinstance(value, list):
        return [_strip_block(b) for b in value]
    return value


def normalized_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The request as it matters to the answer (see the module docstring)."""
    out = {k: v for k, v in body.items() if k not in _NOT_KEYED}
    if "system" in out:
        out["system"] = _blocks(out["system"])
    if isinstance(out.get("tools"), list):
        out["tools"] = [_strip_block(t) for t in out["tools"]]
    messages = out.get("messages")
    if isinstance(messages, list):
        out["messages"] = [{**m, "content": _blocks(m.get("content"))} if isinstance(m, dict) else m for m in messages]
    return out


def cache_key(scope: str, namespace: str, body: Mapping[str, Any], beta: str | None = None) -> str:
    """32 hex characters naming one normalized request within ``scope`` and ``namespace``."""
    hasher = hashlib.blake2b(digest_size=16)
    hasher.update(f"{scope}\x00{namespace}\x00{beta or ''}\x00".encode())
    hasher.update(orjson.dumps(normalized_request(body), option=orjson.OPT_SORT_KEYS))
    return hasher.hexdigest()


def request_key(ctx: RequestContext) -> str:
    """``cache_key`` of the request as it stands, under its namespace header (else its tenant scope); computed once
    per body and shared by the stages that key on it (``RequestContext.derived``)."""
    namespace = ctx.header(NAMESPACE_HEADER) or ctx.tenant.scope
    beta = ctx.header("anthropic-beta")
    memo = ("exact_cache.key", ctx.tenant.scope, namespace, beta)
    key = ctx.derived.get(memo)
    if key is None:
        key = ctx.derived[memo] = cache_key(ctx.tenant.scope, namespace, ctx.body, beta)
    return key


# ------------------------------------------------------------------------------------------------ SSE


def replay_sse(message: Mapping[str, Any]) -> bytes:
    """The SSE event sequence the API would have streamed for ``message`` (one text delta per block)."""
    usage = message.get("usage") or {}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    frames = [encode_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type")
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            deltas.append({"type": "text_delta", "text": block.get("text", "")})
        elif kind == "tool_use":
            opening = {"type": "tool_use", "id": block.get("id"), "name": block.get("name"), "input": {}}
            deltas.append({"type": "input_json_delta", "partial_json": orjson.dumps(block.get("input", {})).decode()})
        elif kind == "thinking":
            opening = {"type": "thinking", "thinking": "", "signature": ""}
            deltas.append({"type": "thinking_delta", "thinking": block.get("thinking", "")})
            deltas.append({"type": "signature_delta", "signature": block.get("signature", "")})
        else:
            opening = dict(block)
        start_event = {"type": "content_block_start", "index": index, "content_block": opening}
        frames.append(encode_event("content_block_start", start_event))
        for delta in deltas:
            frames.append(
                encode_event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            )
        frames.append(encode_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    frames.append(encode_event("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
    frames.append(encode_event("message_stop", {"type": "message_stop"}))
    return b"".join(frames)


def assemble_message(raw: bytes) -> dict[str, Any] | None:
    """The Message a complete SSE stream describes, or None if it did not finish or holds what we cannot replay."""
    parser = SSEParser()
    events = parser.feed(raw) + parser.flush()
    message: dict[str, Any] | None = None
    blocks: dict[int, dict[str, Any]] = {}
    partial: dict[int, str] = {}
    usage: dict[str, Any] = {}
    done = False
    for event in events:
        name = event.event
        if name == "ping":
            continue
        data = event.json()
        if name == "message_start":
            message = dict(data["message"])
            usage = dict(message.get("usage") or {})
        elif name == "content_block_start":
            blocks[int(data["index"])] = dict(data["content_block"])
        elif name == "content_block_delta":
            index, delta = int(data["index"]), data["delta"]
            block = blocks.get(index)
            kind = delta.get("type")
            if block is None:
                return None
            if kind == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif kind == "input_json_delta":
                partial[index] = partial.get(index, "") + delta.get("partial_json", "")
            elif kind == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif kind == "signature_delta":
                block["signature"] = delta.get("signature", "")
            else:
                return None  # citations and whatever comes next: not replayed, not stored
        elif name == "content_block_stop":
            index = int(data["index"])
            if index in partial:
                blocks[index]["input"] = orjson.loads(partial.pop(index) or "{}")
        elif name == "message_delta":
            if message is None:
                return None
            message.update(data.get("delta") or {})
            usage.update(data.get("usage") or {})
        elif name == "message_stop":
            done = True
        else:
            return None  # an error, or an event type we do not know
    if message is None or not done:
        return None
    message["content"] = [blocks[i] for i in sorted(blocks)]
    message["usage"] = usage
    return message


# ------------------------------------------------------------------------------------------------ shared with
# the semantic cache, which stores and replays replies the same way


def storable_message(body: bytes, message: dict[str, Any] | None, max_entry_bytes: int) -> dict[str, Any] | None:
    """The Message to store for this reply, or None when it must not be stored (see the module docstring)."""
    if len(body) > max_entry_bytes:
        return None
    if message is None:
        try:
            message = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
    if not isinstance(message, dict) or message.get("type") != "message":
        return None
    if message.get("stop_reason") not in _STORED_STOPS:
        return None
    if any(not isinstance(b, dict) or b.get("type") not in _REPLAYABLE_BLOCKS or b.get("citations")
           for b in message.get("content") or []):  # fmt: skip
        return None
    return message


def hit_saving(price_book: PriceBook, ctx: RequestContext, entry: CachedReply) -> int:
    """What answering ``ctx`` from ``entry`` saves: what the stored call cost the caller (at this request's
    multipliers), and what the stages below saved on it."""
    request = ctx.request
    cost = price_book.micro_usd(ctx.model, entry.usage, inference_geo=request.inference_geo, speed=request.speed)
    return cost + entry.saved_micro_usd


def requested_ttl(ctx: RequestContext, default_s: float) -> float:
    """The entry TTL ``x-clawback-cache-ttl`` asks for, in seconds; ``default_s`` when absent or not a positive
    number."""
    value = ctx.header(TTL_HEADER)
    try:
        ttl = float(value) if value else default_s
    except ValueError:
        ttl = default_s
    return ttl if ttl > 0 else default_s


def replay_entry(ctx: RequestContext, entry: CachedReply, headers: list[tuple[str, str]]) -> Reply:
    """A stored reply as JSON or, for ``stream: true``, as the API's SSE sequence, sent as one body (no relay
    tasks for a stream whose every byte is already known)."""
    age = str(max(0, int(time.time() - entry.created_at)))
    headers = [*headers, ("age", age)]
    if ctx.stream:
        headers = [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *headers]
        body_bytes = replay_sse(orjson.loads(entry.body))
    else:
        headers = [("content-type", "application/json"), *headers]
        body_bytes = entry.body
    reply = Reply(status=200, headers=headers, body=body_bytes)
    reply.finished = True
    reply.ttft = time.monotonic() - ctx.started
    return reply


async def tee_message(reply: Reply, inner: AsyncIterator[bytes], max_entry_bytes: int) -> AsyncIterator[
        bytes | dict[str, Any]]:  # fmt: skip
    """Relay ``inner`` unchanged, keeping a copy (up to ``max_entry_bytes``); after a clean ``message_stop``
    (by then the upstream relay has closed and the stages below have booked their savings) yield the assembled
    Message once, as a dict, for the caller to store instead of relaying."""
    chunks: list[bytes] | None = []
    size = 0
    limit = max_entry_bytes * 2  # SSE framing roughly doubles a message
    try:
        async for chunk in inner:
            if chunks is not None:
                size += len(chunk)
                if size > limit:
                    chunks = None
                else:
                    chunks.append(chunk)
            yield chunk
    finally:
        aclose = getattr(inner, "aclose", None)
        if aclose is not None:
            await aclose()
    if chunks is not None and reply.finished and reply.error_type is None:
        message = assemble_message(b"".join(chunks))
        if message is not None:
            yield message


# ------------------------------------------------------------------------------------------------ the stage


def cache_eligibility(settings: ExactCacheSettings, ctx: RequestContext) -> str:
    """``"on"``, ``"refresh"`` (store, do not look up) or ``"off"``: the exact cache's eligibility rules (module
    docstring); the coalescing stage applies the same rules."""
    body = ctx.body
    if body.get("max_tokens") == 0:
        return "off"
    header = (ctx.header(CACHE_HEADER) or "").strip().lower()
    if header in _ON:
        return "on"
    if header == "refresh":
        return "refresh"
    if header in _OFF:
        return "off"
    tenant = ctx.tenant
    if tenant.key_id is not None and tenant.key_id in settings.keys:
        return "on" if settings.keys[tenant.key_id] else "off"
    if tenant.feature is not None and tenant.feature in settings.features:
        return "on" if settings.features[tenant.feature] else "off"
    policy = settings.default_policy
    if policy == "all":
        return "on"
    if policy == "deterministic":
        temperature, top_k = body.get("temperature"), body.get("top_k")
        pinned = (isinstance(temperature, int | float) and temperature == 0) or top_k == 1
        return "on" if pinned else "off"
    return "off"


class ExactCacheStage:
    name = "exact_cache"
    # flagged (``pipeline/flags.py``); shadow: look up and store as usual, answer nothing, book what each hit would save
    modes: tuple[Mode, ...] = ("off", "shadow", "on")

    def __init__(self, settings: ExactCacheSettings, price_book: PriceBook, backend: ResponseCache | None = None):
        self.settings = settings
        self.price_book = price_book
        self.backend = backend or make_response_cache(settings)
        self.hits = 0
        self.misses = 0
        self.bypasses = 0
        self.shadow_hits = 0
        self.stored = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def bind(self, chain: Chain) -> None:
        pass

    # -- policy
    def eligible(self, ctx: RequestContext) -> str:
        """``"on"``, ``"refresh"`` (store, do not look up) or ``"off"``: see the module docstring."""
        return cache_eligibility(self.settings, ctx)

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply:
        mode = ctx.mode(self.name)
        if ctx.endpoint != "messages" or mode == "off":
            return await call_next(ctx)
        shadow = mode == "shadow"  # look up and store, but never answer nor add a header: book what a hit saves
        eligibility = self.eligible(ctx)
        if eligibility == "off":
            self.bypasses += 1
            if shadow:
                return await call_next(ctx)
            ctx.cache_status = "bypass"
            reply = await call_next(ctx)
            if ctx.cache_status != "semantic-hit":
                reply.headers.append((CACHE_HEADER, "bypass"))
            return reply
        namespace = ctx.header(NAMESPACE_HEADER) or ctx.tenant.scope
        key = request_key(ctx)
        if eligibility == "on":
            entry = await self.backend.get(key)
            if entry is not None:
                if not shadow:
                    return self._hit(ctx, entry)
                self.shadow_hits += 1
                ctx.shadow_savings.add(self.name, self._hit_saving(ctx, entry))
                return await call_next(ctx)
        self.misses += 1
        reply = await call_next(ctx)
        if ctx.cache_status == "semantic-hit":  # the semantic cache answered: its headers, its entry
            return reply
        if not shadow:
            ctx.cache_status = "miss"
            reply.headers.append((CACHE_HEADER, "miss"))
            reply.headers.append(("x-clawback-cache-key", key))
        if reply.status == 200:
            tags = tuple(t.strip() for t in (ctx.header(TAGS_HEADER) or "").split(",") if t.strip())
            ttl = self._ttl(ctx)
            if reply.stream is None:
                if reply.body:  # the stages below have booked their savings on this reply already
                    self._store(key, ctx.model, namespace, tags, ttl, reply.body, None, ctx.savings.total)
            else:
                reply.stream = self._tee(ctx, reply, reply.stream, key, namespace, tags, ttl)
        return reply

    def _hit_saving(self, ctx: RequestContext, entry: CachedReply) -> int:
        return hit_saving(self.price_book, ctx, entry)

    def _ttl(self, ctx: RequestContext) -> float:
        return requested_ttl(ctx, self.settings.ttl_s)

    def _hit(self, ctx: RequestContext, entry: CachedReply) -> Reply:
        self.hits += 1
        ctx.cache_status = "hit"
        ctx.savings.add(self.name, self._hit_saving(ctx, entry))
        return replay_entry(ctx, entry, [(CACHE_HEADER, "hit"), ("x-clawback-cache-key", entry.key)])

    async def _tee(
        self, ctx: RequestContext, reply: Reply, inner: AsyncIterator[bytes], key: str, namespace: str,
        tags: tuple[str, ...], ttl: float,
    ) -> AsyncIterator[bytes]:  # fmt: skip
        """Relay ``inner`` unchanged; store the reply after ``message_stop`` (see ``tee_message``)."""
        async for chunk in tee_message(reply, inner, self.settings.max_entry_bytes):
            if isinstance(chunk, bytes):
                yield chunk
            else:
                self._store(key, ctx.model, namespace, tags, ttl, orjson.dumps(chunk), chunk, ctx.savings.total)

    def _store(self, key: str, model: str, namespace: str, tags: tuple[str, ...], ttl: float, body: bytes,
               message: dict[str, Any] | None, saved: int) -> None:  # fmt: skip
        message = storable_message(body, message, self.settings.max_entry_bytes)
        if message is None:
            return
        entry = CachedReply(key=key, body=body, model=model, usage=Usage.from_api(message.get("usage")),
                            namespace=namespace, tags=tags, saved_micro_usd=saved)  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._put(entry, ttl))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _put(self, entry: CachedReply, ttl: float) -> None:
        if await self.backend.put(entry, ttl):
            self.stored += 1

    async def flush(self) -> None:
        """Wait for pending stores (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- admin operations (``Invalidates``, ``Reports``)
    async def invalidate(self, *, key: str | None = None, namespace: str | None = None, tag: str | None = None) -> int:
        return await self.backend.invalidate(key=key, namespace=namespace, tag=tag)

    def report(self) -> dict[str, Any]:
        return {"hits": self.hits, "shadow_hits": self.shadow_hits, "misses": self.misses, "bypasses": self.bypasses,
                "stored": self.stored,
                **self.backend.stats()}  # fmt: skip

    async def aclose(self) -> None:
        await self.flush()
        await self.backend.aclose()
