"""Pruning through the gateway against the simulator, which validates every request as strictly as the API."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from clawback.config import PruningSettings
from clawback.storage.ledger import LedgerReader
from tests.conftest import wait_for

MODEL = "claude-sonnet-4-6"


@pytest.fixture
def pruning() -> PruningSettings:
    return PruningSettings(enabled=True, trigger_tokens=400, target_tokens=150)


@pytest.fixture
def gateway_settings(gateway_settings, pruning):
    return gateway_settings.model_copy(update={"pruning": pruning})


@pytest.fixture
def http(gateway, gateway_key):
    with httpx.Client(base_url=gateway.url, headers={"x-api-key": gateway_key}, timeout=30) as client:
        yield client


def received(sim_admin) -> list[dict[str, Any]]:
    rows = sim_admin.get("/_simulator/received").json()
    return [orjson.loads(r["body"]) for r in rows if r["path"] == "/v1/messages"]


def turn(history: list[dict[str, Any]], n: int) -> None:
    """One human turn with a tool call and a large tool result, then the answer."""
    history.append(
        {"role": "user", "content": f"Turn {n}: we need {n + 2} bedrooms near Riverside, budget ${400 + n},000."}
    )
    history.append({"role": "assistant", "content": [
        {"type": "text", "text": "Let me check the listings."},
        {"type": "tool_use", "id": f"toolu_{n:04d}", "name": "search_listings", "input": {"beds": n + 2}},
    ]})  # fmt: skip
    history.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": f"toolu_{n:04d}", "content": f"BW-{n} 3 bed Riverside. " * 60},
    ]})  # fmt: skip
    history.append({"role": "assistant", "content": "Here is what I found for you. " * 8})


def test_a_long_conversation_is_pruned_validly_and_recorded(http, sim_admin, gateway_settings) -> None:
    history: list[dict[str, Any]] = []
    for n in range(16):
        turn(history, n)
        body = {"model": MODEL, "max_tokens": 20, "messages": [*history, {"role": "user", "content": "Any news?"}]}
        response = http.post("/v1/messages", json=body)
        assert response.status_code == 200, response.text  # the simulator rejects any invalid request
    bodies = received(sim_admin)
    assert len(bodies) == 16
    assert len(bodies[-1]["messages"]) < len(history) + 1
    assert "budget $400,000" in orjson.dumps(bodies[-1]).decode()  # a fact from the first turns survives
    full = [*history, {"role": "user", "content": "Any news?"}]
    assert http.post("/v1/messages/count_tokens", json={"model": MODEL, "messages": full}).status_code == 200
    counted = [r for r in sim_admin.get("/_simulator/received").json() if r["path"].endswith("count_tokens")]
    assert orjson.loads(counted[-1]["body"])["messages"] == full  # count_tokens is never pruned

    def rows():
        with LedgerReader(gateway_settings.ledger.url) as reader:
            found = [r for r in reader.rows() if r.endpoint == "messages"]
        return found if len(found) == 16 else None

    records = wait_for(rows)
    pruned = [r for r in records if r.labels.get("pruning", "").startswith("compacted")]
    assert pruned, [r.labels for r in records]
    assert all("pruning" in r.savings_micro_usd for r in pruned)
    assert all(r.counterfactual_micro_usd == r.cost_micro_usd + sum(r.savings_micro_usd.values()) for r in records)
    assert any(int(r.labels["pruning_tokens_after"]) < int(r.labels["pruning_tokens_before"]) / 2 for r in pruned)


@pytest.mark.parametrize("pruning", [PruningSettings(enabled=True, trigger_tokens=400, target_tokens=150,
                                                     fact_memory="summary")])  # fmt: skip
def test_the_summarizer_goes_through_the_pipeline_and_is_booked(http, sim_admin, gateway_settings) -> None:
    history: list[dict[str, Any]] = []
    for n in range(10):
        turn(history, n)
        body = {"model": MODEL, "max_tokens": 20, "messages": [*history, {"role": "user", "content": "Any news?"}]}
        assert http.post("/v1/messages", json=body).status_code == 200
    bodies = received(sim_admin)
    summaries = [b for b in bodies if b["model"] == "claude-haiku-4-5"]
    main = [b for b in bodies if b["model"] == MODEL]
    assert len(main) == 10 and 1 <= len(summaries) < 10  # once per compaction point, not per turn
    assert "conversation-memory" in orjson.dumps(main[-1]).decode()

    def rows():
        with LedgerReader(gateway_settings.ledger.url) as reader:
            found = reader.rows()
        return found if len(found) == len(bodies) else None

    records = wait_for(rows)
    booked = [r for r in records if r.model == "claude-haiku-4-5"]
    assert len(booked) == len(summaries) and all(r.cost_micro_usd > 0 for r in booked)
    assert all(r.labels.get("pruning") == "summary" for r in booked)
