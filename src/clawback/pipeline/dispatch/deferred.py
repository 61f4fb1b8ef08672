"""Deferred calls: a ``POST /v1/messages`` answered through the Message Batches API, at 50 % of standard prices.

Which calls: those with the header ``x-clawback-defer: true`` (per call; from the SDK,
``extra_headers={"x-clawback-defer": "true"}``), or whose feature ``dispatch.defer_features`` names; ``false``
opts a call out. Streams are never deferred (a batch does not stream). The caller's request simply takes longer
(the API finishes a batch within 24 h, usually much sooner): it is answered with the same JSON ``Message`` it would
have got, so the client's code does not change. This suits callers that can wait: jobs, queues, overnight runs
(``clawback.gather(..., defer=True)`` is the batch-at-once form for applications).

How: deferred calls to one upstream key arriving within ``defer_window_s`` are submitted as one batch (up to the
API's 100,000 requests), polled with backoff (``defer_poll_initial_s`` growing by half to ``defer_poll_max_s``),
and its results matched back by ``custom_id``. An ``errored`` item is answered with its own error envelope and
status; ``canceled`` or ``expired`` with a 529 saying so. A client that goes away does not cancel the batch (the
other items need it, and the upstream bills what it processed); its row is still written when the batch ends.

Booking: the request's row is priced at batch prices (``ctx.batch``), and ``savings["dispatch"]`` is what deferring
saved against the standard price of the same usage, so the counterfactual is the caller's own call.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from clawback.api.errors import ERROR_STATUS
from clawback.api.usage import Usage
from clawback.config import DispatchSettings
from clawback.pipeline.context import Reply, RequestContext, new_request_id
from clawback.pipeline.stage import CallNext

__all__ = ["DEFER_HEADER", "DeferredBatcher"]

DEFER_HEADER = "x-clawback-defer"
MAX_BATCH_REQUESTS = 100_000
_ON = frozenset({"true", "1", "yes", "on"})
_OFF = frozenset({"false", "0", "no", "off"})
#: Request headers the batch calls carry over from the first deferred call (API version, betas).
_CARRIED = ("anthropic-version", "anthropic-beta")


@dataclass(slots=True)
class _Item:
    ctx: RequestContext
    future: asyncio.Future[Reply]


class DeferredBatcher:
    def __init__(self, settings: DispatchSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._pending: dict[str, list[_Item]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._ids = itertools.count()
        self.batches = 0
        self.items = 0

    def wants(self, ctx: RequestContext) -> bool:
        if ctx.endpoint != "messages" or ctx.stream:
            return False
        header = (ctx.header(DEFER_HEADER) or "").strip().lower()
        if header in _ON:
            return True
        if header in _OFF:
            return False
        feature = ctx.tenant.feature
        return bool(feature is not None and self.settings.defer_features.get(feature))

    async def submit(self, ctx: RequestContext, key: str, call_next: CallNext) -> Reply:
        loop = asyncio.get_running_loop()
        item = _Item(ctx, loop.create_future())
        queue = self._pending.setdefault(key, [])
        queue.append(item)
        ctx.batch = True
        self.items += 1
        if len(queue) >= MAX_BATCH_REQUESTS:
            self._flush(key, call_next)
        elif key not in self._timers:
            self._timers[key] = loop.call_later(self.settings.defer_window_s, self._flush, key, call_next)
        return await asyncio.shield(item.future)

    def _flush(self, key: str, call_next: CallNext) -> None:
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        items = self._pending.pop(key, [])
        if items:
            task = asyncio.get_running_loop().create_task(self._run(items, call_next))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    async def _call(self, first: RequestContext, call_next: CallNext, method: str, path: str,
                    body: bytes | None) -> tuple[int, bytes]:  # fmt: skip
        headers = [(k, v) for k, v in first.headers if k.lower() in _CARRIED]
        headers.append(("content-type", "application/json"))
        ctx = RequestContext(request_id=new_request_id(), endpoint="passthrough", body={}, raw_body=body,
                             method=method, path=path, headers=headers, upstream_auth=first.upstream_auth)  # fmt: skip
        reply = await call_next(ctx)
        return reply.status, reply.body or b""

    async def _run(self, items: list[_Item], call_next: CallNext) -> None:
        try:
            replies = await self._batch(items, call_next)
        except Exception as exc:  # the upstream could not take the batch: every item gets the reason
            message = f"clawback: the deferred batch failed: {exc.__class__.__name__}: {exc}"
            replies = {i: _error_reply(502, "api_error", message) for i in range(len(items))}
        for index, item in enumerate(items):
            if not item.future.done():
                item.future.set_result(replies[index])

    async def _batch(self, items: list[_Item], call_next: CallNext) -> dict[int, Reply]:
        first = items[0].ctx
        requests = [{"custom_id": f"r{i}", "params": item.ctx.body} for i, item in enumerate(items)]
        status, body = await self._call(first, call_next, "POST", "/v1/messages/batches",
                                        orjson.dumps({"requests": requests}))  # fmt: skip
        if status != 200:
            return {i: Reply(status=status, headers=[("content-type", "application/json")], body=body)
                    for i in range(len(items))}  # fmt: skip
        self.batches += 1
        batch_id = str(orjson.loads(body)["id"])
        delay, maximum = self.settings.defer_poll_initial_s, self.settings.defer_poll_max_s
        while True:
            await asyncio.sleep(delay)
            delay = min(maximum, delay * 1.5)
            status, body = await self._call(first, call_next, "GET", f"/v1/messages/batches/{batch_id}", None)
            if status == 200 and orjson.loads(body).get("processing_status") == "ended":
                break
        status, body = await self._call(first, call_next, "GET", f"/v1/messages/batches/{batch_id}/results", None)
        results: dict[str, Any] = {}
        for line in body.splitlines():
            if line.strip():
                row = orjson.loads(line)
                results[str(row.get("custom_id"))] = row.get("result") or {}
        return {i: _reply(results.get(f"r{i}") or {"type": "expired"}, batch_id) for i in range(len(items))}


def _reply(result: dict[str, Any], batch_id: str) -> Reply:
    kind = result.get("type")
    if kind == "succeeded":
        message = result.get("message") or {}
        reply = Reply(status=200, headers=[("content-type", "application/json"), ("x-clawback-batch-id", batch_id)],
                      body=orjson.dumps(message), usage=Usage.from_api(message.get("usage")),
                      upstream_request_id=message.get("id"))  # fmt: skip
        reply.finished = True
        return reply
    if kind == "errored":
        envelope = result.get("error") or {}
        inner = envelope.get("error")
        error: dict[str, Any] = inner if isinstance(inner, dict) else {}
        error_type = str(error.get("type") or "api_error")
        reply = Reply(status=ERROR_STATUS.get(error_type, 500), headers=[("content-type", "application/json")],
                      body=orjson.dumps(envelope), error_type=error_type)  # fmt: skip
        reply.finished = True
        return reply
    return _error_reply(529, "overloaded_error", f"clawback: the deferred batch item was {kind} by the API")


def _error_reply(status: int, error_type: str, message: str) -> Reply:
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    reply = Reply(status=status, headers=[("content-type", "application/json"), ("x-should-retry", "false")],
                  body=orjson.dumps(body), error_type=error_type)  # fmt: skip
    reply.finished = True
    return reply
