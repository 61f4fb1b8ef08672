"""``clawback eval pruning --json`` on a small slice of the reference workloads."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from clawback.cli import app


def test_eval_pruning_reports_every_strategy_as_json() -> None:
    result = CliRunner().invoke(app, ["eval", "pruning", "--json", "--workload", "lead_chat", "--scale", "0.5"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["strategies"]) == {"window", "window+relevance", "window+facts", "tool_elision", "all"}
    every = report["strategies"]["all"]["all_requests"]
    assert every["fact_retention"] >= 0.98 and every["facts_needed"] > 0
    assert every["history_token_reduction"] > 0.1
    assert every["cost_usd"]["pruned+cache"] < every["cost_usd"]["cache"]
