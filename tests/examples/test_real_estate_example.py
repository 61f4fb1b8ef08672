"""examples/real_estate runs offline against the simulator, through clawback.wrap, into the ledger."""

from __future__ import annotations

import asyncio

from examples.real_estate.run import LEAD_TURNS, run

from clawback.storage.ledger import LedgerReader


def test_example_app(simulator, sim_admin, tmp_path):
    ledger = tmp_path / "example.db"
    result = asyncio.run(run(simulator.url, ledger, leads=12, questions=2))
    assert len(result["answers"]) == len(LEAD_TURNS) and len(result["scores"]) == 12 and len(result["matches"]) == 2
    assert all(result["matches"])
    with LedgerReader(f"sqlite:///{ledger}") as reader:
        rows = reader.rows()
    features = {row.feature for row in rows}
    assert features == {"lead-chat", "lead-scoring", "property-match"}
    assert sum(1 for r in rows if r.feature == "lead-chat") == len(LEAD_TURNS)
    assert sum(r.cost_micro_usd for r in rows) == sim_admin.get("/_simulator/totals").json()["cost_micro_usd"]
