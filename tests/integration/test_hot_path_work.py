"""A guard on the hot path's work per request that cannot flake: counts, not time (issue 19).

N plain requests go through the in-process gateway app (``GatewayApp`` called as ASGI, no HTTP server in front)
against a real simulator on its own thread, with the shipped defaults. ``sys.setprofile`` (which sees only this
thread: the simulator and the ledger writer run on others) counts, per request:

* calls of the gateway's own functions (code under ``src/clawback``), coroutine resumptions left out (their
  number depends on how the socket reads fall, not on the code);
* JSON parses and serializations (``orjson.loads`` / ``orjson.dumps``) and hash work (``blake2b`` / ``sha256``
  built, updated, copied or read) made anywhere in the thread.

Each is checked against a bound set a margin above what the code measured when the guard was written; a change
that adds a whole pass over the body, a second serialization or a stage's per-request recomputation crosses it.
When a change lowers a count for good, lower the bound with it.
"""

from __future__ import annotations

import asyncio
import collections
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import orjson
import pytest

import clawback
from clawback.config import Settings
from clawback.gateway.app import GatewayApp, create_gateway_app
from clawback.serving import BackgroundServer
from clawback.storage.keys import KeyStore

REQUESTS = 200
WARMUP = 20
SYSTEM = ("You are a careful assistant for the accounting team of a mid-sized company. Answer concisely, cite the "
          "invoice numbers you rely on, and say so when the data is not enough to answer. ") * 12  # fmt: skip
BODY = orjson.dumps(
    {
        "model": "claude-sonnet-4-5-20250929",
        "max_tokens": 64,
        "system": SYSTEM,
        "metadata": {"user_id": "user-1234"},
        "temperature": 0.2,
        "messages": [
            {"role": "user", "content": "We received invoices 1041 to 1057 from Northwind. Which are still unpaid?"},
            {
                "role": "assistant",
                "content": "Invoices 1049, 1052 and 1057 are still open; the rest were paid in full.",
            },
            {"role": "user", "content": [{"type": "text", "text": "What is the total amount still owed?"}]},
        ],
    }
)  # benchmarks/messages.lua's request: a 2 KB system prompt, three turns

#: Bounds per request. Measured (200 requests): main at 12853fc 249 calls, 10 JSON, 29 hash operations; after the
#: memos of issue 19 201, 9, 24; with the planner's fast path for prompts too short to cache (this request: about
#: 560 tokens, under Sonnet's 1,024) 203, 6, 9; with token counts memoized from 64 characters, prompt_blocks
#: without a request view, integer micro-dollars and header lookups from aiohttp's parsed headers 154, 6, 9; with the
#: fast path's tools + system memo (``_static_prefix``) 150, 4, 5 and its bound of the messages' tokens instead of
#: a count (``message_tokens_at_most``) 125, 4, 5. A failing run prints its figures and the busiest functions.
BOUNDS = {"clawback_calls": 135, "json": 5, "hashes": 6}

_SRC = str(Path(clawback.__file__).resolve().parent)
_CO_COROUTINE = 0x80 | 0x200 | 0x100  # CO_COROUTINE, CO_ASYNC_GENERATOR, CO_ITERABLE_COROUTINE
_JSON = {"loads", "dumps"}
_HASHES = {"blake2b", "sha256", "openssl_sha256"}
_HASH_TYPES = {"blake2b", "HASH"}


class WorkCounter:
    """``sys.setprofile`` hook: the calls of interest in this thread, by kind."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.by_function: collections.Counter[str] = collections.Counter()
        self._own: dict[Any, bool] = {}

    def __call__(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            own = self._own.get(code)
            if own is None:
                own = self._own[code] = code.co_filename.startswith(_SRC) and not code.co_flags & _CO_COROUTINE
            if own:
                self.counts["clawback_calls"] += 1
                self.by_function[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
        elif event == "c_call":
            name = getattr(arg, "__name__", "")
            module = getattr(arg, "__module__", None) or getattr(getattr(arg, "__self__", None), "__name__", "")
            if name in _JSON and module == "orjson":
                self.counts["json"] += 1
            elif name in _HASHES or type(getattr(arg, "__self__", None)).__name__ in _HASH_TYPES:
                self.counts["hashes"] += 1  # a hash built, fed, copied or read


async def _post(app: GatewayApp, key: str) -> int:
    scope = {"type": "http", "method": "POST", "path": "/v1/messages", "query_string": b"", "headers": [
        (b"host", b"127.0.0.1"), (b"content-type", b"application/json"), (b"x-api-key", key.encode()),
        (b"anthropic-version", b"2023-06-01"), (b"content-length", str(len(BODY)).encode())]}  # fmt: skip
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        return {"type": "http.disconnect"}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return int(sent[0]["status"])


async def _measure(settings: Settings) -> WorkCounter:
    app = create_gateway_app(settings)  # migrates the ledger database
    _, key = KeyStore(settings.ledger.url).create("hot-path", {})
    await app.gateway.start()
    try:
        for _ in range(WARMUP):  # first-request work (connections, memo tables) is not per-request work
            assert await _post(app, key) == 200
        counter = WorkCounter()
        sys.setprofile(counter)
        try:
            statuses = [await _post(app, key) for _ in range(REQUESTS)]
        finally:
            sys.setprofile(None)
        assert statuses == [200] * REQUESTS
        return counter
    finally:
        await app.gateway.aclose()


@pytest.fixture
def default_settings(tmp_path: Path, simulator: BackgroundServer) -> Settings:
    """The shipped defaults, pointed at the test's simulator and a SQLite ledger in ``tmp_path``."""
    ledger = {"url": f"sqlite:///{tmp_path / 'ledger.db'}", "journal_path": str(tmp_path / "journal")}
    return Settings(upstream={"url": simulator.url}, ledger=ledger)


def test_default_pipeline_work_per_request_is_bounded(default_settings: Settings) -> None:
    counter = asyncio.run(_measure(default_settings))
    per_request = {kind: counter.counts[kind] / REQUESTS for kind in BOUNDS}
    top = ", ".join(f"{name} {n / REQUESTS:g}" for name, n in counter.by_function.most_common(15))
    for kind, bound in BOUNDS.items():
        assert per_request[kind] <= bound, f"{kind}: {per_request[kind]:g} per request > {bound} ({per_request}); {top}"
    # The counter sees the stages at all (a guard that counts nothing would pass every change).
    assert per_request["clawback_calls"] > 50 and per_request["json"] >= 1, per_request
