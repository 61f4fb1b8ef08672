"""``clawback whatif``: a user's own request log, replayed to estimate what clawback would have saved."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from typer.testing import CliRunner

from clawback.api.usage import Usage
from clawback.bench.whatif import LogError, read_log, whatif
from clawback.cli import app
from clawback.pricing import load_price_book
from clawback.workloads import build_workload


def write_log(path, steps, *, with_usage):
    start = 1_763_632_800.0
    with path.open("wb") as handle:
        for i, step in enumerate(steps):
            stamp = start + step.at_s
            if i % 3 == 0:  # the three accepted shapes
                line = {"timestamp": datetime.fromtimestamp(stamp, UTC).isoformat().replace("+00:00", "Z"),
                        "request": step.request}  # fmt: skip
            elif i % 3 == 1:
                line = {"timestamp": stamp, "body": step.request}
            else:
                line = {"timestamp": stamp * 1000, **step.request}
            if with_usage:
                line["response"] = {"usage": {"input_tokens": 900 + i, "output_tokens": 40}}
            handle.write(orjson.dumps(line) + b"\n")


def test_whatif_measures_the_log_and_estimates_savings(tmp_path):
    steps = build_workload("faq", 0, 0.15).steps
    log = tmp_path / "requests.jsonl"
    write_log(log, steps, with_usage=True)
    report = whatif(log)
    assert report["requests"] == len(steps) and report["logged_usage_lines"] == len(steps)
    texts = [orjson.dumps(s.request) for s in steps]
    assert report["exact_repeats"] == len(texts) - len(set(texts)) > 0
    book = load_price_book()
    logged = sum(book.cost(s.request["model"], Usage(input_tokens=900 + i, output_tokens=40)).micro_usd
                 for i, s in enumerate(steps))  # fmt: skip
    assert report["logged_cost_usd"] == pytest.approx(logged / 1e6)
    assert report["savings_basis"] == "logged cost"
    assert report["estimated_savings_usd"] == pytest.approx(logged / 1e6 * report["cost_reduction"], abs=1e-6)
    # the logged answer lengths were replayed (the simulator sizes a reply to within a token of its target)
    assert 38 * len(steps) <= report["baseline"]["output_tokens"] <= 40 * len(steps)
    assert report["consistent"] and report["measured"] and report["estimated"]
    assert report["baseline"]["simulator_cost_usd"] == report["simulated_baseline_cost_usd"]


def test_whatif_cli_without_usage_and_bad_logs(tmp_path):
    log = tmp_path / "plain.jsonl"
    write_log(log, build_workload("lead_scoring", 0, 0.03).steps, with_usage=False)
    result = CliRunner().invoke(app, ["whatif", str(log), "--json", "--output-tokens", "50"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.stdout.strip().splitlines()[-1])
    assert report["logged_cost_usd"] is None and report["savings_basis"] == "simulated baseline"
    assert 48 * report["requests"] <= report["baseline"]["output_tokens"] <= 50 * report["requests"]
    assert "measured" in result.stdout and "estimated" in result.stdout
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"model": "claude-sonnet-4-6", "max_tokens": 5, "messages": []}\n')
    with pytest.raises(LogError, match="line 1: no timestamp"):
        read_log(bad)
    assert CliRunner().invoke(app, ["whatif", str(bad)]).exit_code == 2
