"""The prompt-cache planner through the gateway, billed by the simulator's documented caching rules."""

from __future__ import annotations

import asyncio
import itertools

import httpx
import pytest

from clawback.api.messages import count_cache_breakpoints
from clawback.config import PromptCacheSettings, SimulatorSettings
from clawback.pipeline.prompt_cache import PromptCachePlanner
from clawback.storage.ledger import LedgerReader
from tests.conftest import wait_for

MODEL = "claude-sonnet-4-6"  # minimum cacheable prompt: 1,024 tokens
POLICY = " ".join(f"Agency policy clause {i}: viewings need 24 hours notice and photo ID." for i in range(200))
TOOLS = [
    {"name": f"tool_{n}", "description": f"Look up listing data {n}. " * 40,
     "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}
    for n in range(3)
]  # fmt: skip


@pytest.fixture
def simulator_settings() -> SimulatorSettings:
    return SimulatorSettings(seed=7, batch_processing_s=0.2, ttft_ms=150)


@pytest.fixture
def gateway_settings(gateway_settings):
    return gateway_settings.model_copy(update={"prompt_cache": PromptCacheSettings(enabled=True)})


@pytest.fixture
def http(gateway, gateway_key):
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}, timeout=30) as client:
        yield client


def planner(gateway):
    return gateway.app.gateway.pipeline.find(PromptCachePlanner)


def send(http, body):
    response = http.post("/v1/messages", json={"model": MODEL, "max_tokens": 20, **body})
    assert response.status_code == 200, response.text
    return response.json()["usage"]


def received(sim_admin):
    import orjson

    rows = sim_admin.get("/_simulator/received").json()
    return [orjson.loads(r["body"]) for r in rows if r["path"] == "/v1/messages"]


def test_conversation_reads_what_the_previous_turn_wrote(http, sim_admin, gateway, gateway_settings):
    history: list[dict] = []
    usages = []
    for turn in range(5):
        history.append({"role": "user", "content": f"Question {turn}: is the flat on Elm street still free?"})
        usage = send(http, {"system": POLICY, "tools": TOOLS, "messages": history})
        usages.append(usage)
        history.append({"role": "assistant", "content": f"Answer {turn}: yes, viewings on weekdays."})
    first = usages[0]
    assert first["cache_read_input_tokens"] == 0 and first["cache_creation_input_tokens"] > 1024
    for before, after in itertools.pairwise(usages):
        # The documented rule: the tail breakpoint of turn n is found by turn n+1's lookback and read whole.
        assert after["cache_read_input_tokens"] == before["cache_read_input_tokens"] + before[
            "cache_creation_input_tokens"]  # fmt: skip
    bodies = received(sim_admin)
    for body in bodies:
        assert count_cache_breakpoints(body) == 3  # tools, system, tail
        assert body["tools"][-1]["cache_control"] == {"type": "ephemeral"}
        assert body["system"][-1]["cache_control"] == {"type": "ephemeral"}
    with LedgerReader(gateway_settings.ledger.url) as reader:
        rows = wait_for(lambda: (r := reader.rows()) and len(r) >= 5 and r)
    rows.sort(key=lambda r: r.started_at)
    assert rows[0].savings_micro_usd["prompt_cache"] < 0  # the first write has not paid back yet: said so
    assert all(r.savings_micro_usd["prompt_cache"] > 0 for r in rows[1:])
    assert all(r.counterfactual_micro_usd == r.cost_micro_usd + r.savings_micro_usd["prompt_cache"] for r in rows)
    stats = planner(gateway).report()
    assert stats["breakpoints_added"] == 15


def test_client_breakpoints_ttls_and_scope_survive(http, sim_admin):
    system = [
        {"type": "text", "text": POLICY, "cache_control": {"type": "ephemeral", "ttl": "1h", "scope": "org"}},
        {"type": "text", "text": "Be brief."},
    ]
    messages = [{"role": "user", "content": [{"type": "text", "text": "Hello " * 10,
                                              "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]  # fmt: skip
    send(http, {"system": system, "tools": TOOLS, "messages": messages})
    (body,) = received(sim_admin)
    assert body["system"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h", "scope": "org"}
    assert body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    # Ours come before a client 1h marker, so they must be 1h too (1h entries precede 5m ones).
    assert body["tools"][-1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert body["system"][1]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    assert count_cache_breakpoints(body) == 4
    assert [b["text"] for b in body["system"]] == [b["text"] for b in system]


def test_four_client_breakpoints_are_forwarded_byte_for_byte(http, sim_admin):
    control = {"type": "ephemeral"}
    raw = (
        b'{"model":"' + MODEL.encode() + b'","max_tokens":20,"system":[{"type":"text","text":"' + POLICY.encode()
        + b'","cache_control":{"type":"ephemeral"}}],"messages":[{"role":"user","content":[{"type":"text","text":'
        b'"a","cache_control":{"type":"ephemeral"}},{"type":"text","text":"b","cache_control":{"type":"ephemeral"}}'
        b',{"type":"text","text":"c"}]}],  "cache_control": {"type":"ephemeral"}}'
    )  # fmt: skip
    response = http.post("/v1/messages", content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert sim_admin.get("/_simulator/received").json()[-1]["body"].encode() == raw
    assert control  # the request used every slot: nothing added


@pytest.mark.parametrize("client_markers", [0, 1, 2, 3])
def test_never_more_than_four(http, sim_admin, client_markers):
    blocks = [{"type": "text", "text": f"part {i} " + POLICY} for i in range(4)]
    for block in blocks[:client_markers]:
        block["cache_control"] = {"type": "ephemeral"}
    send(http, {"system": blocks[:2], "tools": TOOLS, "messages": [{"role": "user", "content": blocks[2:]}],
                "cache_control": {"type": "ephemeral"}})  # fmt: skip
    body = received(sim_admin)[-1]
    assert count_cache_breakpoints(body) == (3 if client_markers == 0 else 4)  # the auto marker holds the tail


def test_short_prefixes_get_no_breakpoint(http, sim_admin):
    usage = send(http, {"system": "Short policy.", "messages": [{"role": "user", "content": "hi"}]})
    assert usage["cache_creation_input_tokens"] == 0
    (body,) = received(sim_admin)
    assert count_cache_breakpoints(body) == 0
    assert body["system"] == "Short policy."  # untouched, still a string


def test_fast_path_decides_per_request_on_a_remembered_prefix(http, sim_admin, gateway):
    """The fast path remembers a prefix's tokens and digest (``_static_prefix``), not its verdict: the same short
    system prompt with a long question is planned, and a changed short prompt still reaches the churn watch."""
    first = "Short agency policy, version 1."
    send(http, {"system": first, "messages": [{"role": "user", "content": "hi"}]})
    send(http, {"system": first, "messages": [{"role": "user", "content": "hi again"}]})
    assert planner(gateway).below_minimum == 2
    question = "Is the flat on Elm street still free for a viewing next week? " * 150  # ~2,000 tokens
    send(http, {"system": first, "messages": [{"role": "user", "content": question}]})
    assert planner(gateway).below_minimum == 2
    assert [count_cache_breakpoints(body) for body in received(sim_admin)][:2] == [0, 0]
    assert count_cache_breakpoints(received(sim_admin)[2]) >= 1
    marked = [{"type": "text", "text": first, "cache_control": {"type": "ephemeral"}}]
    send(http, {"system": marked, "messages": [{"role": "user", "content": "hi"}]})
    assert planner(gateway).below_minimum == 2  # a client's marker is never the fast path's
    send(http, {"system": "Short agency policy, version 2.", "messages": [{"role": "user", "content": "hi"}]})
    assert planner(gateway).below_minimum == 3
    (report,) = planner(gateway).report()["churn"]
    assert report["changes"][0].startswith("system.0: volatile content")


def test_timestamp_in_system_prompt_is_reported(http, gateway):
    for second in (1, 7):
        system = f"Current time: 2026-11-05T10:00:0{second}Z. Request id req_{second}abc.\n" + POLICY
        send(http, {"system": system, "messages": [{"role": "user", "content": "hello"}]})
    reports = planner(gateway).report()["churn"]
    assert len(reports) == 1
    (change,) = reports[0]["changes"]
    assert change.startswith("system.0: volatile content") and "10:00:01" in change and "10:00:07" in change


def test_reordered_tools_are_reported(http, gateway):
    send(http, {"tools": TOOLS, "messages": [{"role": "user", "content": "hello"}]})
    send(http, {"tools": TOOLS[::-1], "messages": [{"role": "user", "content": "hello again"}]})
    (report,) = planner(gateway).report()["churn"]
    assert report["changes"][0].startswith("tools reordered")


def test_single_shot_tail_writes_back_off(http, gateway):
    """Scoring different leads against one system prompt: the tail write is never read, so it stops."""
    for i in range(8):
        send(http, {"system": POLICY, "messages": [{"role": "user", "content": f"Score lead {i}: " + "x " * 30}]})
    families = planner(gateway).report()["families"]
    (family,) = families.values()
    assert family["tail"]["writes"] == 3 and family["tail"]["reads"] == 0
    assert family["system"]["reads"] == 7


def test_fanout_sends_one_write_for_concurrent_requests(gateway, gateway_key, sim_admin):
    async def burst(n: int) -> list[dict]:
        async with httpx.AsyncClient(base_url=gateway.url, headers={"x-api-key": gateway_key}, timeout=30) as client:

            async def one(i: int) -> dict:
                lead = [{"role": "user", "content": f"Lead {i}: score it."}]
                body = {"model": MODEL, "max_tokens": 20, "system": POLICY + " batch", "messages": lead,
                        "stream": i % 2 == 0}  # fmt: skip
                response = await client.post("/v1/messages", json=body)
                assert response.status_code == 200
                return response

            await asyncio.gather(*(one(i) for i in range(n)))
        return [r["usage"] for r in sim_admin.get("/_simulator/requests").json()]

    usages = asyncio.run(burst(6))
    assert len(usages) == 6
    writes = [u["cache_creation_input_tokens"] for u in usages]
    reads = [u["cache_read_input_tokens"] for u in usages]
    assert sum(1 for r in reads if r > 0) == 5  # all but the leader read the system prompt
    assert max(writes) > 1024 and sorted(writes)[-2] < 100  # only the leader wrote it
    assert planner(gateway).report()["fanout_held"] == 5
