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


def test_batch_scoring_now_and_overnight(tmp_path):
    """The example's two ways of scoring a pile of leads: every lead scored once, one ledger row each, the
    overnight run's rows booked at batch prices (half the standard price of their own usage)."""
    import random

    from examples.real_estate.batch_scoring import score

    from clawback.config import SimulatorSettings
    from clawback.serving import BackgroundServer
    from clawback.upstream.simulator.app import create_simulator_app
    from clawback.workloads.real_estate import _lead_form, load_data

    rng = random.Random(3)
    forms = [_lead_form(rng, load_data()) for _ in range(16)]
    settings = SimulatorSettings(seed=3, ttft_ms=20, max_concurrent_requests=4, batch_processing_s=0.3)
    results = {}
    for defer in (False, True):
        with BackgroundServer(create_simulator_app(settings)) as sim:
            results[defer] = asyncio.run(score(sim.url, tmp_path / f"l-{defer}.db", forms, defer=defer))
    for result in results.values():
        assert result["scored"] == 16 and result["failed"] == 0 and result["ledger_rows"] == 16
    from clawback.api.usage import Usage
    from clawback.pricing import load_price_book

    book = load_price_book()
    with LedgerReader(f"sqlite:///{tmp_path / 'l-True.db'}") as reader:
        overnight = reader.rows()
    assert overnight and all(r.batch for r in overnight)
    assert any(r.cache_read_input_tokens for r in overnight)  # the 1 h mark on the shared instructions is read
    for row in overnight:
        usage = Usage(row.input_tokens, row.output_tokens, row.cache_read_input_tokens,
                      row.cache_write_5m_input_tokens, row.cache_write_1h_input_tokens)  # fmt: skip
        standard = book.cost(row.model, usage).micro_usd
        assert abs(row.cost_micro_usd * 2 - standard) <= 1
