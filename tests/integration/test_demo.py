"""``clawback demo`` end to end, small: simulator and gateway start, the mix replays, the ledger is written."""

from __future__ import annotations

import io

from rich.console import Console

from clawback.cli.demo import run_demo
from clawback.storage.ledger import LedgerReader


def test_demo_runs_offline_and_writes_the_ledger(tmp_path):
    out = io.StringIO()
    ledger = tmp_path / "demo.db"
    baseline, optimized = run_demo(ledger, scale=0.05, console=Console(file=out, width=160))
    text = out.getvalue()
    assert "would have cost" in text and "clawback serve" in text and str(ledger) in text
    assert f"clawback dashboard --ledger sqlite:///{ledger}" in text  # how to open the dashboard on this ledger
    assert baseline.errors == optimized.errors == 0
    assert optimized.simulator_micro_usd <= baseline.simulator_micro_usd
    with LedgerReader(f"sqlite:///{ledger}") as reader:
        totals = reader.totals()
    assert totals["count"] == optimized.requests
    assert totals["cost_micro_usd"] == optimized.simulator_micro_usd == optimized.harness_micro_usd
    run_demo(ledger, scale=0.05, console=Console(file=io.StringIO()))  # a second run starts a fresh ledger
    with LedgerReader(f"sqlite:///{ledger}") as reader:
        assert reader.count() == optimized.requests
