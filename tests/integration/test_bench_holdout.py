"""``clawback bench savings``' holdout: the crossover replays put every conversation once in each cohort, and the
saving measured treated-vs-holdout agrees with the counterfactual the ledger books on the treated requests."""

from __future__ import annotations

from clawback.bench.harness import BASELINE
from clawback.bench.savings import HOLDOUT_RUNS, holdout_comparison, run_savings, summarize


def test_treated_vs_holdout_saving_agrees_with_the_booked_counterfactual():
    results, elapsed = run_savings(["lead_chat"], scale=0.5, holdout=True)
    runs = results["lead_chat"]
    base = next(r for r in runs if r.config == BASELINE)
    crossover = [r for r in runs if r.config in HOLDOUT_RUNS]
    assert len(crossover) == 2 and all(r.errors == 0 and r.consistent for r in crossover)
    comparison = holdout_comparison(runs)
    assert comparison is not None
    # a crossover: every request of the workload once treated and once held out
    assert comparison.treated.requests == comparison.holdout.requests == base.requests
    assert comparison.holdout.cost_micro_usd == base.simulator_micro_usd  # held out = sent as the client wrote it
    assert comparison.booked_saving is not None and comparison.measured_saving.mean > 0.05
    # the stated margin: the booked share lies within the measured saving's 95 % interval, and within 2 points
    assert comparison.agrees, comparison.as_dict()
    assert abs(comparison.booked_saving - comparison.measured_saving.mean) < 0.02, comparison.as_dict()
    report = summarize(results, elapsed, seed=0, scale=0.5)
    figures = report["workloads"]["lead_chat"]
    assert figures["holdout"]["agrees"] is True and set(figures["by_optimization"]).isdisjoint(HOLDOUT_RUNS)
