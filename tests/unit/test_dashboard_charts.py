"""The dashboard's Vega-Lite charts: each from a frame exactly as the data layer returns it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pandas as pd

from clawback.dashboard import charts


def _spend(buckets: int, groups: int = 2) -> pd.DataFrame:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    rows = [
        {"bucket": t0 + timedelta(hours=h), "group": f"m{g}", "requests": 1, "cost_usd": 1.0 + g,
         "counterfactual_usd": 2.0 + g, "saved_usd": 1.0}
        for h in range(buckets)
        for g in range(groups)
    ]  # fmt: skip
    return pd.DataFrame(rows)


def test_spend_chart_stacks_groups_under_the_counterfactual_line() -> None:
    chart = charts.spend_chart(_spend(24), "team", "hour")
    assert chart is not None
    assert len(chart.data) == 48 and list(chart.data.columns) == ["bucket", "group", "cost_usd", "counterfactual_usd"]
    bars, would = chart.spec["layer"]
    assert bars["mark"]["type"] == "bar" and bars["encoding"]["color"]["field"] == "group"
    assert would["mark"]["type"] == "line" and would["encoding"]["y"]["field"] == "counterfactual_usd"
    assert bars["encoding"]["x"]["timeUnit"] == "utcyearmonthdatehours"
    assert chart.spec["title"].startswith("Spend by team")
    daily = charts.spend_chart(_spend(3), "team", "day")
    assert daily is not None and daily.spec["layer"][0]["encoding"]["x"]["timeUnit"] == "utcyearmonthdate"


def test_small_charts_are_drawn_on_the_server_large_ones_left_to_the_browser() -> None:
    small = charts.spend_chart(_spend(24))
    assert small is not None
    svg = charts.to_svg(small, 500)
    assert svg is not None and svg.startswith("<svg ") and 'class="marks"' in svg
    assert 'style="width:100%' in svg  # scaled to its column
    # Vega's own marks: 48 bars (24 hours x 2 groups) and the counterfactual line's 24 points, each with its
    # values as ARIA label and as tooltip (<title>); the title and the axes drawn as text.
    tooltips = re.findall(r'<path aria-label="([^"]*)"[^>]*><title>([^<]*)</title></path>', svg)
    assert len(tooltips) >= 48 + 24 and all(label == title for label, title in tooltips)
    assert sum("cost_usd" in t or "spend" in t for _, t in tooltips) >= 48
    assert "Spend by model (dotted: without clawback)" in svg
    assert "\n\n" not in svg  # one HTML block for the markdown renderer: a blank line would end it
    large = charts.spend_chart(_spend(90, groups=40))  # 3,600 bars: 90 days x 40 keys
    assert large is not None and charts.to_svg(large, 500) is None


def test_server_drawn_bars_keep_the_data_order_and_values() -> None:
    savings = pd.DataFrame({"stage": ["prompt_cache", "exact_cache"], "saved_usd": [2.5, 0.25], "requests": [3, 1]})
    chart = charts.savings_chart(savings)
    assert chart is not None
    svg = charts.to_svg(chart, 300)
    assert svg is not None
    labels = re.findall(r'aria-roledescription="bar" d="M[0-9.]+,([0-9.]+)h', svg)
    assert len(labels) == 2 and float(labels[0]) < float(labels[1])  # the larger saving is the taller bar
    assert "&#36;2.50" in svg and "&#36;0.25" in svg  # the text layer's dollar labels, "$" as a reference:
    assert "$" not in svg  # Streamlit's markdown loads its math chunk for any "$" in a source


def test_empty_frames_give_no_chart() -> None:
    empty = pd.DataFrame(columns=["bucket", "group", "cost_usd", "counterfactual_usd"])
    assert charts.spend_chart(empty) is None
    assert charts.tokens_chart(pd.DataFrame({"bucket": [], "kind": [], "tokens": []})) is None
    assert charts.savings_chart(pd.DataFrame(columns=["stage", "saved_usd", "requests"])) is None


def test_errors_chart_draws_a_zero_line_when_nothing_failed() -> None:
    t0 = datetime(2026, 12, 1, tzinfo=UTC)
    series = pd.DataFrame({"bucket": [t0, t0 + timedelta(hours=1)], "error_type": "(no error)", "errors": 0,
                           "requests": [5, 7], "error_rate": 0.0})  # fmt: skip
    chart = charts.errors_chart(series)
    assert chart is not None
    assert chart.data["error_type"].tolist() == ["none", "none"]
    assert chart.spec["encoding"]["y"]["scale"] == {"domain": [0, 0.01]}


def test_entity_chart_splits_each_spender_into_halves_largest_first() -> None:
    top = pd.DataFrame({"value": ["u1", "u2"], "cost_usd": [3.0, 1.0], "first_half_usd": [1.0, 0.5],
                        "second_half_usd": [2.0, 0.5]})  # fmt: skip
    chart = charts.entity_chart(top, "user")
    assert chart is not None
    assert sorted(chart.data["half"].unique()) == ["first half", "second half"]
    assert chart.data.loc[chart.data["value"] == "u1", "spend_usd"].sum() == 3.0
    assert chart.spec["encoding"]["y"]["sort"] == {"field": "cost_usd", "order": "descending"}


def test_cohort_chart_bounds_the_confidence_interval() -> None:
    cohorts = pd.DataFrame({"cohort": ["holdout", "treated"], "cost_per_request_usd": [0.02, 0.01],
                            "ci95_usd": [0.005, 0.001]})  # fmt: skip
    chart = charts.cohort_chart(cohorts)
    assert chart is not None
    assert chart.data["low"].round(6).tolist() == [0.015, 0.009]
    assert chart.data["high"].round(6).tolist() == [0.025, 0.011]
