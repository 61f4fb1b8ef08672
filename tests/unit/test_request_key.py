"""One serialization and one hash of a request for every stage that keys on it (issue 19)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from clawback.api.usage import Usage
from clawback.config import Settings
from clawback.pipeline import exact_cache
from clawback.pipeline.build import build_pipeline
from clawback.pipeline.context import Reply, RequestContext, Tenant
from clawback.pricing import load_price_book

POLICY = " ".join(f"Agency policy clause {i}: viewings need 24 hours notice and photo ID." for i in range(300))


def _ctx(question: str) -> RequestContext:
    body: dict[str, Any] = {"model": "claude-sonnet-4-6", "max_tokens": 50, "temperature": 0, "system": POLICY,
                            "messages": [{"role": "user", "content": question}]}  # fmt: skip
    raw = orjson.dumps(body)
    return RequestContext(request_id="r", endpoint="messages", body=orjson.loads(raw), raw_body=raw,
                          tenant=Tenant(key_id="k1"), upstream_auth={"x-api-key": "sk"})  # fmt: skip


def test_exact_cache_and_coalescing_share_one_key_across_the_planners_markers(monkeypatch: pytest.MonkeyPatch):
    computed: list[str] = []
    original = exact_cache.cache_key

    def counting(*args: Any, **kwargs: Any) -> str:
        key = original(*args, **kwargs)
        computed.append(key)
        return key

    monkeypatch.setattr(exact_cache, "cache_key", counting)
    sent: list[RequestContext] = []

    async def upstream(ctx: RequestContext) -> Reply:
        sent.append(ctx)
        message = {"id": "m", "type": "message", "role": "assistant", "model": ctx.model, "stop_reason": "end_turn",
                   "content": [{"type": "text", "text": "ok"}],
                   "usage": {"input_tokens": 10, "output_tokens": 2}}  # fmt: skip
        return Reply(200, [("content-type", "application/json")], body=orjson.dumps(message),
                     usage=Usage(input_tokens=10, output_tokens=2), finished=True)  # fmt: skip

    settings = Settings(dispatch={"enabled": False}, budgets={"enforce": False})
    pipeline = build_pipeline(settings, price_book=load_price_book(settings.pricing), sinks=[], terminal=upstream)
    ctx = _ctx("When can I view the flat on Elm Street?")
    assert asyncio.run(pipeline(ctx)).status == 200
    assert sent and "cache_control" in orjson.dumps(sent[0].body).decode()  # the planner marked the request
    assert len(computed) == 1  # the exact cache's key, reused by coalescing after the markers were added
    assert exact_cache.request_key(ctx) == computed[0]
    ctx.replace_body({**ctx.body, "messages": [{"role": "user", "content": "And on Oak Road?"}]})
    assert exact_cache.request_key(ctx) != computed[0] and len(computed) == 2  # a new body: a new key
