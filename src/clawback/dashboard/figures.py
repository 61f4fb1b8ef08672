"""Plotly figures of the data layer's frames: one function per chart, shared by the dashboard and the report.

Each takes a frame exactly as ``clawback.dashboard.data.LedgerQueries`` returns it and returns a
``plotly.graph_objects.Figure``; none queries anything, so the report and the dashboard draw the same chart
from the same numbers. Figures of an empty frame are ``None``: the caller says "no data" instead of drawing
an empty axis.
"""

from __future__ import annotations

import pandas as pd
import plotly.express as px
import plotly.graph_objects as go

from clawback.dashboard.data import usd

__all__ = [
    "cache_figure",
    "cohort_figure",
    "daily_spend_figure",
    "entity_figure",
    "errors_figure",
    "latency_figure",
    "savings_figure",
    "spend_figure",
    "tokens_figure",
]

# An explicit template: importing Streamlit replaces Plotly's default one, and the report must look the same
# whatever else the process imported (the dashboard draws with Streamlit's theme on top of it).
_TEMPLATE = "plotly_white"
_LAYOUT = {
    "template": _TEMPLATE,
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "legend": {"orientation": "h", "y": -0.2},
    "height": 340,
}


def _styled(fig: go.Figure, title: str, frame: pd.DataFrame | None = None, x: str = "bucket") -> go.Figure:
    fig.update_layout(title=title, **_LAYOUT)
    if frame is not None and frame[x].nunique() <= 1:
        fig.update_xaxes(type="category")  # one bucket: a label, not a time axis zoomed to microseconds
    return fig


def spend_figure(series: pd.DataFrame, by_label: str = "model") -> go.Figure | None:
    """Stacked spend per bucket, split by one dimension, with the counterfactual as a line."""
    if series.empty:
        return None
    fig = px.bar(
        template=_TEMPLATE,
        data_frame=series,
        x="bucket",
        y="cost_usd",
        color="group",
        labels={"cost_usd": "spend ($)", "bucket": "", "group": by_label},
    )
    would = series.groupby("bucket", as_index=False)["counterfactual_usd"].sum()
    fig.add_trace(
        go.Scatter(
            x=would["bucket"],
            y=would["counterfactual_usd"],
            name="without clawback",
            mode="lines+markers",
            line={"dash": "dot", "color": "#444"},
        )
    )
    fig.update_layout(barmode="stack")
    return _styled(fig, f"Spend by {by_label}", series)


def tokens_figure(tokens: pd.DataFrame) -> go.Figure | None:
    """Tokens per bucket by kind: input, cache writes (5 m / 1 h), cache reads, output."""
    if tokens.empty or not tokens["tokens"].sum():
        return None
    fig = px.bar(template=_TEMPLATE, data_frame=tokens, x="bucket", y="tokens", color="kind", labels={"bucket": ""})
    fig.update_layout(barmode="stack")
    return _styled(fig, "Tokens by kind", tokens)


def cache_figure(series: pd.DataFrame) -> go.Figure | None:
    """Hit rate of each cache per bucket (prompt cache: share of prompt tokens read from cache)."""
    if series.empty:
        return None
    fig = px.line(
        template=_TEMPLATE,
        data_frame=series,
        x="bucket",
        y="hit_rate",
        color="cache",
        markers=True,
        labels={"bucket": "", "hit_rate": "hit rate"},
    )
    fig.update_yaxes(tickformat=".0%", range=[0, 1])
    return _styled(fig, "Cache hit rates", series)


def savings_figure(by_stage: pd.DataFrame) -> go.Figure | None:
    """Dollars each optimization saved against the counterfactual."""
    if by_stage.empty:
        return None
    fig = px.bar(
        template=_TEMPLATE,
        data_frame=by_stage,
        x="stage",
        y="saved_usd",
        text_auto=".4s",
        labels={"saved_usd": "saved ($)", "stage": ""},
    )
    return _styled(fig, "Savings by optimization")


def latency_figure(series: pd.DataFrame) -> go.Figure | None:
    """Latency percentiles per bucket (read off the rollups' histogram)."""
    if series.empty:
        return None
    fig = px.line(
        template=_TEMPLATE,
        data_frame=series,
        x="bucket",
        y="latency_ms",
        color="percentile",
        markers=True,
        labels={"bucket": "", "latency_ms": "latency (ms)"},
    )
    return _styled(fig, "Latency percentiles", series)


def errors_figure(series: pd.DataFrame) -> go.Figure | None:
    """Error rate per bucket, by error type."""
    if series.empty:
        return None
    errors = series[series["error_type"] != "(no error)"]
    if errors.empty:
        buckets = series.groupby("bucket", as_index=False)["requests"].sum()
        errors = buckets.assign(error_type="none", error_rate=0.0)
    fig = px.bar(
        template=_TEMPLATE,
        data_frame=errors,
        x="bucket",
        y="error_rate",
        color="error_type",
        labels={"bucket": "", "error_rate": "error rate", "error_type": "error"},
    )
    fig.update_layout(barmode="stack")
    fig.update_yaxes(tickformat=".1%", rangemode="tozero")
    if not errors["error_rate"].max():
        fig.update_yaxes(range=[0, 0.01])
    return _styled(fig, "Error rate", errors)


def cohort_figure(cohorts: pd.DataFrame) -> go.Figure | None:
    """Cost per request of the holdout group against treated traffic, with 95 % confidence intervals."""
    if cohorts.empty:
        return None
    fig = px.bar(
        template=_TEMPLATE,
        data_frame=cohorts,
        x="cohort",
        y="cost_per_request_usd",
        error_y="ci95_usd",
        labels={"cost_per_request_usd": "cost per request ($)", "cohort": ""},
    )
    return _styled(fig, "Holdout vs treated: cost per request")


def entity_figure(top: pd.DataFrame, label: str) -> go.Figure | None:
    """The largest spenders: spend in the range's first and second half (the trend)."""
    if top.empty:
        return None
    halves = {"first_half_usd": "first half", "second_half_usd": "second half"}
    frame = top.melt(id_vars="value", value_vars=list(halves), var_name="half", value_name="usd").replace(halves)
    fig = px.bar(
        template=_TEMPLATE,
        data_frame=frame,
        y="value",
        x="usd",
        color="half",
        orientation="h",
        barmode="group",
        labels={"value": "", "usd": "spend ($)", "half": ""},
    )
    fig.update_yaxes(autorange="reversed")
    return _styled(fig, f"Largest spenders by {label}")


def daily_spend_figure(daily: pd.DataFrame, anomalies: pd.DataFrame | None = None) -> go.Figure | None:
    """Spend per day, anomalous days (above their usual range) marked."""
    if daily.empty:
        return None
    fig = go.Figure(go.Bar(x=daily["day"], y=usd(daily["cost_micro_usd"]), name="spend ($)"))
    if anomalies is not None and not anomalies.empty:
        fig.add_trace(
            go.Scatter(
                x=anomalies["day"],
                y=usd(anomalies["cost_micro_usd"]),
                mode="markers",
                marker={"color": "red", "size": 12, "symbol": "x"},
                name="anomaly",
            )
        )
    return _styled(fig, "Spend per day", daily, "day")
