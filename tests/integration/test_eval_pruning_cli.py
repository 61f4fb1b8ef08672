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
    assert report["turns"] == {"lead_chat": "human turns"}
    alone = report["strategies"]["all"]["workloads"]["lead_chat"]
    assert alone["all_requests"] == every  # one workload: its figures are the combined ones


def test_agentic_traffic_counts_round_trips_and_tool_loops_are_elided() -> None:
    result = CliRunner().invoke(app, ["eval", "pruning", "--json", "--workload", "agentic"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["turns"] == {"agentic": "round trips"}
    for strategy in ("tool_elision", "all"):
        figures = report["strategies"][strategy]["workloads"]["agentic"]
        for subset in ("all_requests", "long_conversations"):
            row = figures[subset]
            assert row["requests"] > 0 and row["facts_needed"] > 0  # sessions reach 20+ round trips
            assert row["history_token_reduction"] > 0.2, (strategy, subset, row)
            assert row["cost_usd"]["pruned+cache"] < row["cost_usd"]["cache"]
            assert row["fact_retention"] >= 0.99 and row["fact_retention_cached"] >= 0.99
            # with the planner's frontier a compaction is cheaper, so the cached set-up elides at least as much
            assert row["input_token_reduction_cached"] >= row["input_token_reduction"]
    long = report["strategies"]["all"]["workloads"]["agentic"]["long_conversations"]
    assert long["input_token_reduction_cached"] >= 0.5  # the bar, on the reference workload
