"""The dashboard's Vega-Lite charts: each from a frame exactly as the data layer returns it."""

from __future__ import annotations

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


def test_small_charts_draw_as_svg_large_ones_as_streamlit_chooses() -> None:
    small = charts.spend_chart(_spend(24))
    assert small is not None and small.spec["usermeta"] == {"embedOptions": {"renderer": "svg"}}
    large = charts.spend_chart(_spend(90, groups=40))  # 3,600 bars: 90 days x 40 keys
    assert large is not None and "usermeta" not in large.spec


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
