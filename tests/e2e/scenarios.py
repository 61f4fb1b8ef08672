"""Scenarios and checks shared by the gateway and wrapper end-to-end tests (two front doors, one behaviour)."""

from __future__ import annotations

from clawback.config import Settings
from clawback.storage.ledger import LedgerReader
from tests.conftest import wait_for


def ledger_rows(settings: Settings, count: int):
    with LedgerReader(settings.ledger.url) as reader:
        return wait_for(lambda: (rows := reader.rows()) and len(rows) >= count and rows)


def assert_ledger_matches_simulator(settings: Settings, sim_admin, count: int):
    """Every billed Messages call has one ledger row with the simulator's usage and cost, and no more."""
    rows = [r for r in ledger_rows(settings, count) if r.endpoint == "messages"]
    billed = [r for r in sim_admin.get("/_simulator/requests").json() if r["endpoint"] == "messages"]
    assert len(rows) == len(billed) == count
    by_upstream = {r.upstream_request_id: r for r in rows}
    for upstream in billed:
        row = by_upstream[upstream["request_id"]]
        usage = upstream["usage"]
        assert row.input_tokens == usage["input_tokens"]
        assert row.output_tokens == usage["output_tokens"]
        assert row.cache_read_input_tokens == usage["cache_read_input_tokens"]
        assert row.cache_write_5m_input_tokens == usage["cache_creation"]["ephemeral_5m_input_tokens"]
        assert row.cost_micro_usd == upstream["cost_micro_usd"] > 0
        assert row.counterfactual_micro_usd == row.cost_micro_usd
    assert sum(r.cost_micro_usd for r in rows) == sim_admin.get("/_simulator/totals").json()["cost_micro_usd"]
    return sorted(rows, key=lambda r: r.started_at)


def tool_round_trip(client, model: str):  # type: ignore[no-untyped-def]
    """A tool_use answered by a tool_result, through either front door; returns both messages."""
    tools = [{"name": "match_listing", "input_schema": {"type": "object", "properties": {"beds": {"type": "integer"}}}}]
    first = client.messages.create(
        model=model, max_tokens=200, tools=tools, messages=[{"role": "user", "content": "3 beds?"}]
    )
    assert first.stop_reason == "tool_use"
    call = next(b for b in first.content if b.type == "tool_use")
    second = client.messages.create(
        model=model,
        max_tokens=200,
        tools=tools,
        messages=[
            {"role": "user", "content": "3 beds?"},
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "2 found"}]},
        ],
    )
    assert second.stop_reason == "end_turn"
    return first, second
