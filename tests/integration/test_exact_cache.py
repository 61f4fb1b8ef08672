"""The exact response cache through the gateway: hits, SSE replay to the official SDK, policy, tenancy,
invalidation through the admin API, and the Redis backend (real Redis at 127.0.0.1:6379)."""

from __future__ import annotations

import asyncio
import uuid

import anthropic
import httpx
import pytest
from pydantic import SecretStr

from clawback.api.usage import Usage
from clawback.config import ExactCacheSettings, PromptCacheSettings
from clawback.pipeline.exact_cache import ExactCacheStage, cache_key
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerReader
from clawback.storage.response_cache import CachedReply, MemoryResponseCache, RedisResponseCache
from tests.conftest import redis_up, wait_for

MODEL = "claude-sonnet-4-6"
ADMIN = "admin-secret"
ASK = {"model": MODEL, "max_tokens": 40, "temperature": 0, "messages": [{"role": "user", "content": "Elm street?"}]}


@pytest.fixture(params=["memory", "redis"])
def backend(request):
    if request.param == "redis" and not redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")
    return request.param


@pytest.fixture
def prompt_cache() -> PromptCacheSettings:
    return PromptCacheSettings(enabled=False)  # as in conftest: each test turns on what it tests


@pytest.fixture
def gateway_settings(gateway_settings, backend, prompt_cache):
    cache = ExactCacheSettings(enabled=True, backend=backend, redis_prefix=f"cbtest:{uuid.uuid4().hex[:8]}:")
    gateway = gateway_settings.gateway.model_copy(update={"admin_token": SecretStr(ADMIN)})
    return gateway_settings.model_copy(update={"exact_cache": cache, "gateway": gateway, "prompt_cache": prompt_cache})


@pytest.fixture
def http(gateway, gateway_key):
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}, timeout=30) as client:
        yield client


def flush(gateway):
    stage = gateway.app.gateway.pipeline.find(ExactCacheStage)
    loop = gateway.loop if hasattr(gateway, "loop") else None
    if loop is not None:
        asyncio.run_coroutine_threadsafe(stage.flush(), loop).result(5)
    else:
        wait_for(lambda: not stage._tasks)


def upstream_calls(sim_admin):
    return len([r for r in sim_admin.get("/_simulator/requests").json() if r["endpoint"] == "messages"])


def test_json_hit_is_free_and_saves_the_whole_call(http, gateway, gateway_settings, sim_admin):
    first = http.post("/v1/messages", json=ASK)
    assert first.headers["x-clawback-cache"] == "miss"
    flush(gateway)
    second = http.post("/v1/messages", json={**ASK, "metadata": {"user_id": "someone"}})
    assert second.headers["x-clawback-cache"] == "hit"
    assert second.json() == first.json()
    assert upstream_calls(sim_admin) == 1
    with LedgerReader(gateway_settings.ledger.url) as reader:
        rows = wait_for(lambda: (r := reader.rows()) and len(r) >= 2 and r)
    miss, hit = sorted(rows, key=lambda r: r.started_at)
    assert (miss.cache_status, hit.cache_status) == ("miss", "hit")
    assert hit.cost_micro_usd == 0 and hit.input_tokens == 0
    assert hit.savings_micro_usd == {"exact_cache": miss.cost_micro_usd} and miss.cost_micro_usd > 0
    assert hit.counterfactual_micro_usd == miss.cost_micro_usd


@pytest.mark.parametrize("prompt_cache", [PromptCacheSettings(enabled=True)])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_with_the_planner_a_hit_books_what_the_callers_own_request_would_have_cost(
    http, gateway, gateway_settings, stream
) -> None:
    """The stored call was cheaper than the caller's request because the planner cached its prefix; a hit's
    saving adds that back (stored with the entry), so its counterfactual is the caller's own request."""
    policies = "\n".join(f"Policy {i}: answer from the listings, never invent a price or a date." for i in range(160))
    ask = {**ASK, "system": policies, "stream": stream}
    warm = http.post("/v1/messages", json={**ask, "messages": [{"role": "user", "content": "Warm up."}]})
    assert warm.status_code == 200
    miss = http.post("/v1/messages", json=ask)
    assert miss.headers["x-clawback-cache"] == "miss"
    flush(gateway)
    hit = http.post("/v1/messages", json=ask)
    assert hit.headers["x-clawback-cache"] == "hit"
    with LedgerReader(gateway_settings.ledger.url) as reader:
        rows = wait_for(lambda: (r := reader.rows()) and len(r) >= 3 and r)
    _, stored, served = sorted(rows, key=lambda r: r.started_at)
    assert stored.savings_micro_usd.get("prompt_cache", 0) > 0  # the warm-up wrote the prefix, the fill read it
    assert served.savings_micro_usd == {"exact_cache": stored.cost_micro_usd + stored.savings_micro_usd["prompt_cache"]}
    assert served.counterfactual_micro_usd == stored.counterfactual_micro_usd


def test_streamed_fill_and_streamed_hit_pass_the_sdk_parser(gateway, gateway_key, sim_admin):
    client = anthropic.Anthropic(base_url=gateway.url, api_key=gateway_key, max_retries=0)
    args = {"model": MODEL, "max_tokens": 40, "extra_headers": {"x-clawback-cache": "on"},
            "messages": [{"role": "user", "content": "Stream me the Elm street answer."}]}  # fmt: skip
    with client.messages.stream(**args) as stream:
        original = stream.get_final_message()
    flush(gateway)
    with client.messages.stream(**args) as stream:
        assert stream.response.headers["x-clawback-cache"] == "hit"
        events = [event.type for event in stream]
        replayed = stream.get_final_message()
    assert events[0] == "message_start" and "text" in events
    assert replayed.model_dump() == original.model_dump()
    plain = client.messages.create(**args)  # a JSON request is answered by the streamed fill
    assert plain.content[0].text == original.content[0].text
    assert upstream_calls(sim_admin) == 1


def test_policy_default_header_and_tenant_scope(gateway, gateway_settings, sim_admin):
    _, other = KeyStore(gateway_settings.ledger.url).create("other tenant", {})
    _, mine = KeyStore(gateway_settings.ledger.url).create("tenant", {})
    http = httpx.Client(base_url=gateway.url, headers={"x-api-key": mine}, timeout=30)
    sampled = {**ASK, "temperature": 1.0}
    assert http.post("/v1/messages", json=sampled).headers["x-clawback-cache"] == "bypass"
    assert http.post("/v1/messages", json=sampled).headers["x-clawback-cache"] == "bypass"
    opted = http.post("/v1/messages", json=sampled, headers={"x-clawback-cache": "on"})
    assert opted.headers["x-clawback-cache"] == "miss"
    flush(gateway)
    assert http.post("/v1/messages", json=sampled, headers={"x-clawback-cache": "on"}).headers[
        "x-clawback-cache"] == "hit"  # fmt: skip
    assert http.post("/v1/messages", json=ASK, headers={"x-clawback-cache": "off"}).headers[
        "x-clawback-cache"] == "bypass"  # fmt: skip
    http.post("/v1/messages", json=ASK)
    flush(gateway)
    theirs = http.post("/v1/messages", json=ASK, headers={"x-api-key": other})
    assert theirs.status_code == 200, theirs.text
    assert theirs.headers["x-clawback-cache"] == "miss"  # same request, other tenant: never shared


def test_admin_invalidation_by_key_namespace_and_tag(http, gateway, sim_admin):
    admin = {"authorization": f"Bearer {ADMIN}"}
    tagged = {"x-clawback-cache-tags": "listings,elm", "x-clawback-cache-namespace": "docs-v1"}
    key = http.post("/v1/messages", json=ASK, headers=tagged).headers["x-clawback-cache-key"]
    flush(gateway)
    assert http.post("/v1/messages", json=ASK, headers=tagged).headers["x-clawback-cache"] == "hit"
    assert http.post("/admin/cache/invalidate", json={"tag": "elm"}).status_code == 401
    assert http.post("/admin/cache/invalidate", json={"tag": "elm"}, headers=admin).json()["invalidated"] == 1
    assert http.post("/v1/messages", json=ASK, headers=tagged).headers["x-clawback-cache"] == "miss"
    flush(gateway)
    result = http.post("/admin/cache/invalidate", json={"namespace": "docs-v1"}, headers=admin).json()
    assert result["invalidated"] == 1
    http.post("/v1/messages", json=ASK, headers=tagged)
    flush(gateway)
    assert http.post("/admin/cache/invalidate", json={"key": key}, headers=admin).json()["invalidated"] == 1
    stats = http.get("/admin/cache/stats", headers=admin).json()["exact_cache"]
    assert stats["hits"] == 1 and stats["misses"] == 3


def test_admin_api_is_off_without_a_token(simulator, tmp_path):
    from clawback.config import Settings
    from clawback.gateway.app import create_gateway_app
    from clawback.serving import BackgroundServer

    settings = Settings(upstream={"url": simulator.url}, ledger={"url": f"sqlite:///{tmp_path / 'l.db'}",
                        "journal_path": str(tmp_path / "j")})  # fmt: skip
    with BackgroundServer(create_gateway_app(settings)) as server:
        response = httpx.post(f"{server.url}/admin/cache/invalidate", json={"tag": "x"},
                              headers={"authorization": "Bearer anything"})  # fmt: skip
    assert response.status_code == 404


# --------------------------------------------------------------------------------------------- backends


def entry(key: str, size: int = 100, *, namespace: str = "ns", tags: tuple[str, ...] = ()) -> CachedReply:
    return CachedReply(key=key, body=b"x" * size, model=MODEL, usage=Usage(10, 5), namespace=namespace, tags=tags)


def test_a_stored_reply_keeps_the_saving_below_the_cache_and_older_entries_load_without_it():
    stored = CachedReply(key="k", body=b'{"x": 1}', model=MODEL, usage=Usage(10, 5), namespace="ns", saved_micro_usd=42)
    assert CachedReply.loads(stored.dumps()) == stored
    head, _, body = stored.dumps().partition(b"\n")
    older = head.replace(b',"saved_micro_usd":42', b"") + b"\n" + body  # as entries stored before the field
    assert b"saved_micro_usd" not in older and CachedReply.loads(older).saved_micro_usd == 0


def test_memory_backend_is_bounded_in_bytes():
    async def main():
        cache = MemoryResponseCache(max_bytes=1000)
        for i in range(10):
            await cache.put(entry(f"k{i}", 200), 60)
        assert cache.bytes <= 1000 and len(cache) == 3
        assert await cache.get("k0") is None and await cache.get("k9") is not None

    asyncio.run(main())


def test_redis_backend_shared_bounded_and_down_means_miss():
    if not redis_up():
        pytest.skip("no Redis at 127.0.0.1:6379")

    async def main():
        prefix = f"cbtest:{uuid.uuid4().hex[:8]}:"
        one = RedisResponseCache("redis://127.0.0.1:6379/0", max_bytes=2000, prefix=prefix)
        two = RedisResponseCache("redis://127.0.0.1:6379/0", max_bytes=2000, prefix=prefix)
        try:
            assert await one.put(entry("a", tags=("t",)), 60)
            got = await two.get("a")  # another replica sees it
            assert got is not None and got.usage == Usage(10, 5) and got.body == b"x" * 100
            for i in range(20):
                await one.put(entry(f"b{i}", 300), 60)
            assert await one.bytes_used() <= 2000 and await two.get("a") is None
            assert await two.invalidate(tag="t") == 0
            await one.put(entry("c", tags=("t",)), 60)
            assert await two.invalidate(tag="t") == 1 and await one.get("c") is None
        finally:
            await one.clear()
            await one.aclose()
            await two.aclose()
        down = RedisResponseCache("redis://127.0.0.1:1/0", max_bytes=2000, prefix=prefix, timeout_s=0.05)
        assert await down.get("a") is None  # refused: a miss, not an error
        assert await down.put(entry("a"), 60) is False
        assert down.circuit.errors == 1  # the breaker skips Redis for a second after a failure
        await down.aclose()

    asyncio.run(main())


def test_key_ignores_metadata_stream_and_markers_but_not_parameters():
    base = {"model": MODEL, "max_tokens": 10, "system": "S", "messages": [{"role": "user", "content": "q"}]}
    same = {**base, "stream": True, "metadata": {"user_id": "u"}, "cache_control": {"type": "ephemeral"},
            "system": [{"type": "text", "text": "S", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "q"}]}]}  # fmt: skip
    assert cache_key("t", "n", base) == cache_key("t", "n", same)
    assert cache_key("t", "n", base) != cache_key("t", "n", {**base, "max_tokens": 11})
    assert cache_key("t", "n", base) != cache_key("other", "n", base)
    assert cache_key("t", "n", base) != cache_key("t", "n", base, beta="some-beta")


def test_cli_invalidates_through_the_admin_api(http, gateway, backend):
    from typer.testing import CliRunner

    from clawback.cli import app

    http.post("/v1/messages", json=ASK, headers={"x-clawback-cache-tags": "cli"})
    flush(gateway)
    args = ["cache", "invalidate", "--tag", "cli", "--gateway", gateway.url, "--admin-token", ADMIN]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0 and "invalidated 1" in result.output
    assert CliRunner().invoke(app, [*args[:-1], "wrong"]).exit_code == 1
