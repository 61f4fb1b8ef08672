"""Plotly figures of the data layer's frames, for ``clawback report`` (one function per chart).

Each takes a frame exactly as ``clawback.dashboard.data.LedgerQueries`` returns it and returns a
``plotly.graph_objects.Figure``; none queries anything. The dashboard draws the same frames with Vega-Lite
(``clawback.dashboard.charts``: Plotly.js cost the browser ~0.9 s of script per chart there); the report keeps
Plotly, whose HTML embeds plotly.js in one file that can be mailed. Figures of an empty frame are ``None``:
the caller says "no data" instead of drawing an empty axis.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from clawback.dashboard.data import error_rows, usd

__all__ = [
    "REPORT_TEMPLATE",
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

#: No template here: applying one costs ~10 ms a figure, and the dashboard draws with Streamlit's theme anyway.
#: The report sets ``REPORT_TEMPLATE`` itself (importing Streamlit replaces Plotly's default template, so the
#: report must name its own to look the same whatever else the process imported).
REPORT_TEMPLATE = "plotly_white"
_LAYOUT = {
    "margin": {"l": 10, "r": 10, "t": 40, "b": 10},
    "legend": {"orientation": "h", "y": -0.2},
    "height": 340,
}


def _styled(fig: go.Figure, title: str, frame: pd.DataFrame | None = None, x: str = "bucket") -> go.Figure:
    fig.update_layout(title=title, **_LAYOUT)
    if frame is not None and frame[x].nunique() <= 1:
        fig.update_xaxes(type="category")  # one bucket: a label, not a time axis zoomed to microseconds
    return fig


def _traces(
    frame: pd.DataFrame, x: str, y: str, by: str, kind: str = "bar", **options: Any
) -> list[go.Bar | go.Scatter]:
    """One trace per value of ``by`` (what plotly.express would build, at a tenth of its CPU time: express
    validated and grouped each frame again, ~40 ms a chart, most of a dashboard render's server time)."""
    out: list[go.Bar | go.Scatter] = []
    for value, group in frame.groupby(by, sort=True):
        if kind == "bar":
            out.append(go.Bar(x=group[x], y=group[y], name=str(value), **options))
        else:
            out.append(go.Scatter(x=group[x], y=group[y], name=str(value), mode="lines+markers", **options))
    return out


def spend_figure(series: pd.DataFrame, by_label: str = "model") -> go.Figure | None:
    """Stacked spend per bucket, split by one dimension, with the counterfactual as a line."""
    if series.empty:
        return None
    fig = go.Figure(_traces(series, "bucket", "cost_usd", "group"))
    would = series.groupby("bucket", as_index=False)["counterfactual_usd"].sum()
    fig.add_trace(go.Scatter(x=would["bucket"], y=would["counterfactual_usd"], name="without clawback",
                             mode="lines+markers", line={"dash": "dot", "color": "#444"}))  # fmt: skip
    fig.update_layout(barmode="stack", yaxis_title="spend ($)", legend_title_text=by_label)
    return _styled(fig, f"Spend by {by_label}", series)


def tokens_figure(tokens: pd.DataFrame) -> go.Figure | None:
    """Tokens per bucket by kind: input, cache writes (5 m / 1 h), cache reads, output."""
    if tokens.empty or not tokens["tokens"].sum():
        return None
    fig = go.Figure(_traces(tokens, "bucket", "tokens", "kind"))
    fig.update_layout(barmode="stack", yaxis_title="tokens")
    return _styled(fig, "Tokens by kind", tokens)


def cache_figure(series: pd.DataFrame) -> go.Figure | None:
    """Hit rate of each cache per bucket (prompt cache: share of prompt tokens read from cache)."""
    if series.empty:
        return None
    fig = go.Figure(_traces(series, "bucket", "hit_rate", "cache", kind="line"))
    fig.update_yaxes(tickformat=".0%", range=[0, 1], title="hit rate")
    return _styled(fig, "Cache hit rates", series)


def savings_figure(by_stage: pd.DataFrame) -> go.Figure | None:
    """Dollars each optimization saved against the counterfactual."""
    if by_stage.empty:
        return None
    fig = go.Figure(go.Bar(x=by_stage["stage"], y=by_stage["saved_usd"], text=by_stage["saved_usd"],
                           texttemplate="$%{y:.4s}", name="saved"))  # fmt: skip
    fig.update_layout(yaxis_title="saved ($)", showlegend=False)
    return _styled(fig, "Savings by optimization")


def latency_figure(series: pd.DataFrame) -> go.Figure | None:
    """Latency percentiles per bucket (read off the rollups' histogram)."""
    if series.empty:
        return None
    fig = go.Figure(_traces(series, "bucket", "latency_ms", "percentile", kind="line"))
    fig.update_layout(yaxis_title="latency (ms)")
    return _styled(fig, "Latency percentiles", series)


def errors_figure(series: pd.DataFrame) -> go.Figure | None:
    """Error rate per bucket, by error type."""
    if series.empty:
        return None
    errors = error_rows(series)
    fig = go.Figure(_traces(errors, "bucket", "error_rate", "error_type"))
    fig.update_layout(barmode="stack", legend_title_text="error")
    fig.update_yaxes(tickformat=".1%", rangemode="tozero", title="error rate")
    if not errors["error_rate"].max():
        fig.update_yaxes(range=[0, 0.01])
    return _styled(fig, "Error rate", errors)


def cohort_figure(cohorts: pd.DataFrame) -> go.Figure | None:
    """Cost per request of the holdout group against treated traffic, with 95 % confidence intervals."""
    if cohorts.empty:
        return None
    fig = go.Figure(go.Bar(x=cohorts["cohort"], y=cohorts["cost_per_request_usd"], name="cost per request",
                           error_y={"type": "data", "array": cohorts["ci95_usd"]}))  # fmt: skip
    fig.update_layout(yaxis_title="cost per request ($)", showlegend=False)
    return _styled(fig, "Holdout vs treated: cost per request")


def entity_figure(top: pd.DataFrame, label: str) -> go.Figure | None:
    """The largest spenders: spend in the range's first and second half (the trend)."""
    if top.empty:
        return None
    fig = go.Figure([
        go.Bar(y=top["value"], x=top["first_half_usd"], name="first half", orientation="h"),
        go.Bar(y=top["value"], x=top["second_half_usd"], name="second half", orientation="h"),
    ])  # fmt: skip
    fig.update_layout(barmode="group", xaxis_title="spend ($)")
    fig.update_yaxes(autorange="reversed")
    return _styled(fig, f"Largest spenders by {label}")


def daily_spend_figure(daily: pd.DataFrame, anomalies: pd.DataFrame | None = None) -> go.Figure | None:
    """Spend per day, anomalous days (above their usual range) marked."""
    if daily.empty:
        return None
    fig = go.Figure(go.Bar(x=daily["day"], y=usd(daily["cost_micro_usd"]), name="spend ($)"))
    if anomalies is not None and not anomalies.empty:
        fig.add_trace(go.Scatter(x=anomalies["day"], y=usd(anomalies["cost_micro_usd"]), mode="markers",
                                 marker={"color": "red", "size": 12, "symbol": "x"}, name="anomaly"))  # fmt: skip
    return _styled(fig, "Spend per day", daily, "day")
