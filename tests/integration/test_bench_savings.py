"""The savings harness: dollars counted three ways must agree, and quality signals mean what they say.

Small workloads replayed for real (simulator and gateway over HTTP, a SQLite ledger): the harness's own
figure (answers' usage priced by the pricing module), the gateway's ledger and the simulator's billing must
be equal to the micro-dollar, for the baseline and for every configuration.
"""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from clawback.bench.harness import BASELINE, replay
from clawback.bench.savings import (
    FULL,
    booked_share,
    optimization_names,
    run_savings,
    summarize,
    with_optimizations,
)
from clawback.cli import app
from clawback.config import Settings
from clawback.workloads import build_workload


def test_harness_dollars_equal_ledger_and_simulator():
    results, elapsed = run_savings(["lead_chat", "faq"], scale=0.1)
    names = optimization_names()
    for workload, runs in results.items():
        assert [r.config for r in runs] == [BASELINE, FULL, *names]
        base = runs[0]
        assert base.ledger_micro_usd is None and base.upstream_requests == base.requests > 0
        assert base.errors == 0 and base.cache_hits == 0
        for run in runs:
            assert run.errors == 0, run.first_error
            assert run.simulator_micro_usd > 0
            assert run.harness_micro_usd == run.simulator_micro_usd
            if run.config != BASELINE:
                assert run.ledger_micro_usd == run.simulator_micro_usd
                # the ledger's counterfactual is its own cost plus what the stages say they saved
                assert run.ledger_counterfactual_micro_usd == run.ledger_micro_usd + sum(run.savings_by_stage.values())
            assert run.consistent
        if workload == "lead_chat":
            assert base.facts_needed > 0 and base.fact_retention == 1.0  # the client's own request keeps all
        # the ledger proves the dollars saved: what the stages booked is the saving measured against the baseline
        for run in runs[1:]:
            share = booked_share(run, base.simulator_micro_usd)
            assert share is None or 0.95 <= share <= 1.03, (workload, run.config, share)
        if workload == "faq" and "exact_cache" in names:
            exact = next(r for r in runs if r.config == "exact_cache")
            assert exact.cache_hits > 0 and exact.false_hits == 0  # byte-equal requests only
            assert exact.upstream_requests == exact.requests - exact.cache_hits
            assert exact.simulator_micro_usd < base.simulator_micro_usd
    report = summarize(results, elapsed, seed=0, scale=0.1)
    assert report["consistent"] and set(report["workloads"]) == {"lead_chat", "faq"}
    assert report["baseline_cost_usd"] >= report["optimized_cost_usd"] > 0
    figures = report["workloads"]["faq"]
    for key in ("baseline_cost_usd", "optimized_cost_usd", "cost_reduction", "baseline", "optimized"):
        assert key in figures
    for key in ("input_tokens", "cache_write_tokens", "cache_read_tokens", "output_tokens", "upstream_requests",
                "latency_p50_ms", "latency_p99_ms", "fact_retention", "false_hit_rate"):  # fmt: skip
        assert key in figures["optimized"]


def test_baseline_through_a_passthrough_gateway_costs_the_same():
    """With every optimization off, the gateway changes nothing: same bill as going straight to the API."""
    workload = build_workload("agentic", 0, 0.2)
    direct = replay(workload)
    through = replay(workload, config="none", settings=with_optimizations(Settings(), set()))
    assert through.simulator_micro_usd == direct.simulator_micro_usd == through.ledger_micro_usd
    assert through.usage == direct.usage and through.consistent


def test_cli_json_is_the_last_line():
    result = CliRunner().invoke(app, ["bench", "savings", "--workload", "property_match", "--scale", "0.05", "--json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout.strip().splitlines()[-1])
    figures = report["workloads"]["property_match"]
    assert figures["baseline_cost_usd"] > 0 and "cost_reduction" in report and report["consistent"]
    assert "property_match" in result.stdout and "baseline" in result.stdout
    bad = CliRunner().invoke(app, ["bench", "savings", "--workload", "nope"])
    assert bad.exit_code == 2
