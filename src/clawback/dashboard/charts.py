"""Vega-Lite charts of the data layer's frames, for the dashboard: drawn to SVG on the server (``to_svg``).

Why not the report's Plotly figures (``clawback.dashboard.figures``): measured in Chromium at 1 M ledger rows
(``benchmarks/dashboard_bench.py``, ``benchmarks/README.md``), Plotly.js inside Streamlit cost ~0.9 s of renderer
script per chart and loads a 4.7 MB bundle; Vega-Lite, which Streamlit bundles, a quarter of that. The report
keeps Plotly (one self-contained HTML file with plotly.js embedded).

Why server-side SVG (``vl-convert-python``: Vega's own renderer in an embedded JavaScript engine): the first
chart ``st.vega_lite_chart`` draws makes the browser fetch, parse and compile Streamlit's Vega chunk (~1.3 MB of
JavaScript: vega-embed, Arrow) before anything is drawn, most of the cold first render's gap above an empty
Streamlit page (``benchmarks/README.md``). The same spec drawn on the server arrives as an SVG document of the
same marks (Vega's SVG renderer, its ARIA labels included), each mark carrying its label as an SVG ``<title>``
(the browser's own hover tooltip). Beyond ``SVG_MAX_POINTS`` a chart is left to ``st.vega_lite_chart``
(canvas), where a static document would grow to megabytes.

Each function takes a frame exactly as ``clawback.dashboard.data.LedgerQueries`` returns it and returns a
``Chart`` (the frame to send, Arrow-encoded by Streamlit, and a Vega-Lite spec naming its columns), or ``None``
for an empty frame: the caller says "no data" instead of drawing an empty axis. Specs are plain dicts (no
Altair): nothing to validate per render, and tests can read them.
"""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import pandas as pd

from clawback.dashboard.data import error_rows

__all__ = [
    "SVG_MAX_POINTS",
    "Chart",
    "cache_chart",
    "cohort_chart",
    "entity_chart",
    "errors_chart",
    "latency_chart",
    "savings_chart",
    "spend_chart",
    "to_svg",
    "to_svgs",
    "tokens_chart",
    "warm_up",
]

#: Up to this many data points a chart is drawn as SVG on the server (its marks are DOM nodes: the browser test
#: can read them; a 2,000-bar document is ~0.4 MB); beyond, ``st.vega_lite_chart`` (canvas past 2,000).
SVG_MAX_POINTS = 2000
HEIGHT = 300
Spec = dict[str, Any]


class Chart(NamedTuple):
    data: pd.DataFrame
    spec: Spec


def _time_unit(grain: str) -> str:
    return "utcyearmonthdatehours" if grain == "hour" else "utcyearmonthdate"


def _x_time(grain: str) -> Spec:
    """Buckets as UTC time units: bars fill their hour or day, and the axis reads in UTC as the data does."""
    return {"field": "bucket", "type": "temporal", "timeUnit": _time_unit(grain), "title": None,
            "axis": {"format": "%H:%M" if grain == "hour" else "%b %d", "labelOverlap": True}}  # fmt: skip


def _legend(title: str | None) -> Spec:
    return {"orient": "bottom", "title": title, "columns": 4}


def _chart(data: pd.DataFrame, title: str, spec: Spec) -> Chart:
    return Chart(data, {"title": title, "height": HEIGHT, **spec})


def to_svg(chart: Chart, width: int) -> str | None:
    """The chart drawn by Vega on the server, ``width`` pixels wide (scaled to its container by the browser):
    an SVG document with a ``<title>`` on each mark; None beyond ``SVG_MAX_POINTS`` (the caller draws it in the
    browser)."""
    if len(chart.data) > SVG_MAX_POINTS:
        return None
    import vl_convert

    values = json.loads(chart.data.to_json(orient="records", date_format="iso", date_unit="ms"))
    spec = {**_without_tooltips(chart.spec), "data": {"values": values}, "width": width, "config": CONFIG}
    svg = vl_convert.vegalite_to_svg(spec)
    # Scale to the container; a <title> per mark is the hover tooltip the browser draws for it. "$" as a
    # character reference: the same text, and Streamlit's markdown renderer loads its math chunk (KaTeX,
    # 0.26 MB) for any source holding a "$".
    svg = svg.replace("<svg ", '<svg style="width:100%;height:auto;max-width:100%" ', 1).replace("$", "&#36;")
    return _MARK.sub(lambda m: f"{m.group(1)}><title>{m.group(2)}</title></path>", svg)


def _without_tooltips(spec: Spec) -> Spec:
    """The spec without its marks' ``tooltip`` (a static SVG shows none; Vega spends ~20 % of a drawing
    formatting them): the ``<title>`` tooltips come from the ARIA labels Vega writes anyway."""
    out: Spec = {}
    for key, value in spec.items():
        if key == "mark" and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k != "tooltip"}
        elif key == "layer":
            value = [_without_tooltips(layer) for layer in value]
        out[key] = value
    return out


def to_svgs(drawings: list[tuple[Chart | None, int]]) -> list[str | None]:
    """``to_svg`` of each (chart, width), drawn concurrently (Vega's engine runs several at once, outside the
    GIL): a section's charts cost the slowest one's time, not their sum. None for a missing chart."""
    jobs = [_POOL.submit(to_svg, chart, width) if chart is not None else None for chart, width in drawings]
    return [job.result() if job is not None else None for job in jobs]


#: A mark's path with its ARIA label (Vega's SVG renderer writes it XML-escaped: reused as the title's text).
_MARK = re.compile(r'(<path [^>]*?aria-label="([^"]*)"[^>]*?)\s*/>')
#: Close to Streamlit's own chart theme: its font, no outer frame. A white background of its own: the SVG's
#: text is black, which Streamlit's dark theme (chosen by the viewer's system setting) would hide.
CONFIG: Spec = {"font": '"Source Sans", sans-serif', "view": {"stroke": None}, "background": "white"}
_warmed = threading.Event()
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="clawback-vega")


def warm_up() -> None:
    """Start Vega's JavaScript engine in the background (~1-2 s, once per process), so that the first session's
    charts do not wait for all of it: called at the top of every script run (only the first call starts it)."""
    if _warmed.is_set():
        return
    _warmed.set()

    def run() -> None:
        import vl_convert

        vl_convert.vegalite_to_svg({"data": {"values": [{"a": 1}]}, "mark": "point",
                                    "encoding": {"x": {"field": "a", "type": "quantitative"}}})  # fmt: skip

    threading.Thread(target=run, name="clawback-vega-warm-up", daemon=True).start()


def spend_chart(series: pd.DataFrame, by_label: str = "model", grain: str = "hour") -> Chart | None:
    """Stacked spend per bucket, split by one dimension, with the counterfactual ("without clawback") as a line."""
    if series.empty:
        return None
    data = series[["bucket", "group", "cost_usd", "counterfactual_usd"]]
    x = _x_time(grain)
    bars: Spec = {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": x,
            "y": {"aggregate": "sum", "field": "cost_usd", "type": "quantitative", "title": "spend ($)",
                  "stack": "zero"},
            "color": {"field": "group", "type": "nominal", "legend": _legend(by_label)},
        },
    }  # fmt: skip
    would: Spec = {
        "mark": {"type": "line", "point": True, "strokeDash": [4, 3], "color": "#444", "tooltip": True},
        "encoding": {
            "x": x,
            "y": {"aggregate": "sum", "field": "counterfactual_usd", "type": "quantitative",
                  "title": "spend ($)"},
        },
    }  # fmt: skip
    return _chart(data, f"Spend by {by_label} (dotted: without clawback)", {"layer": [bars, would]})


def tokens_chart(tokens: pd.DataFrame, grain: str = "hour") -> Chart | None:
    """Tokens per bucket by kind: input, cache writes (5 m / 1 h), cache reads, output."""
    if tokens.empty or not tokens["tokens"].sum():
        return None
    spec: Spec = {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": _x_time(grain),
            "y": {"field": "tokens", "type": "quantitative", "stack": "zero", "title": "tokens"},
            "color": {"field": "kind", "type": "nominal", "legend": _legend(None)},
        },
    }
    return _chart(tokens, "Tokens by kind", spec)


def _lines(data: pd.DataFrame, title: str, y: Spec, by: str, grain: str) -> Chart:
    spec: Spec = {
        "mark": {"type": "line", "point": True, "tooltip": True},
        "encoding": {"x": _x_time(grain), "y": y, "color": {"field": by, "type": "nominal", "legend": _legend(None)}},
    }
    return _chart(data, title, spec)


def cache_chart(series: pd.DataFrame, grain: str = "hour") -> Chart | None:
    """Hit rate of each cache per bucket (prompt cache: share of prompt tokens read from cache)."""
    if series.empty:
        return None
    y = {"field": "hit_rate", "type": "quantitative", "title": "hit rate", "axis": {"format": ".0%"},
         "scale": {"domain": [0, 1]}}  # fmt: skip
    return _lines(series, "Cache hit rates", y, "cache", grain)


def latency_chart(series: pd.DataFrame, grain: str = "hour") -> Chart | None:
    """Latency percentiles per bucket (read off the rollups' histogram)."""
    if series.empty:
        return None
    y = {"field": "latency_ms", "type": "quantitative", "title": "latency (ms)"}
    return _lines(series, "Latency percentiles", y, "percentile", grain)


def errors_chart(series: pd.DataFrame, grain: str = "hour") -> Chart | None:
    """Error rate per bucket, by error type (a zero line when no request failed)."""
    if series.empty:
        return None
    errors = error_rows(series)
    scale = {"domain": [0, 0.01]} if not errors["error_rate"].max() else {"zero": True}
    spec: Spec = {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "x": _x_time(grain),
            "y": {"field": "error_rate", "type": "quantitative", "stack": "zero", "title": "error rate",
                  "axis": {"format": ".1%"}, "scale": scale},
            "color": {"field": "error_type", "type": "nominal", "legend": _legend("error")},
        },
    }  # fmt: skip
    return _chart(errors[["bucket", "error_type", "error_rate"]], "Error rate", spec)


def savings_chart(by_stage: pd.DataFrame) -> Chart | None:
    """Dollars each optimization saved against the counterfactual."""
    if by_stage.empty:
        return None
    x = {"field": "stage", "type": "nominal", "sort": "-y", "title": None, "axis": {"labelAngle": 0}}
    y = {"field": "saved_usd", "type": "quantitative", "title": "saved ($)"}
    spec: Spec = {
        "encoding": {"x": x, "y": y},
        "layer": [
            {"mark": {"type": "bar", "tooltip": True}},
            {"mark": {"type": "text", "dy": -6}, "encoding": {"text": {"field": "saved_usd", "format": "$,.2f"}}},
        ],
    }
    return _chart(by_stage[["stage", "saved_usd"]], "Savings by optimization", spec)


def cohort_chart(cohorts: pd.DataFrame) -> Chart | None:
    """Cost per request of the holdout group against treated traffic, with 95 % confidence intervals."""
    if cohorts.empty:
        return None
    data = cohorts[["cohort", "cost_per_request_usd", "ci95_usd"]].copy()
    data["low"] = data["cost_per_request_usd"] - data["ci95_usd"]
    data["high"] = data["cost_per_request_usd"] + data["ci95_usd"]
    x = {"field": "cohort", "type": "nominal", "title": None, "axis": {"labelAngle": 0}}
    spec: Spec = {
        "encoding": {"x": x},
        "layer": [
            {"mark": {"type": "bar", "tooltip": True},
             "encoding": {"y": {"field": "cost_per_request_usd", "type": "quantitative",
                                "title": "cost per request ($)"}}},
            {"mark": {"type": "rule", "color": "#333"},
             "encoding": {"y": {"field": "low", "type": "quantitative"}, "y2": {"field": "high"}}},
        ],
    }  # fmt: skip
    return _chart(data, "Holdout vs treated: cost per request (95 % CI)", spec)


def entity_chart(top: pd.DataFrame, label: str) -> Chart | None:
    """The largest spenders: spend in the range's first and second half (the trend), largest first."""
    if top.empty:
        return None
    long = top[["value", "cost_usd", "first_half_usd", "second_half_usd"]].melt(
        id_vars=["value", "cost_usd"], var_name="half", value_name="spend_usd"
    )
    long["half"] = long["half"].map({"first_half_usd": "first half", "second_half_usd": "second half"})
    spec: Spec = {
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "y": {"field": "value", "type": "nominal", "title": None,
                  "sort": {"field": "cost_usd", "order": "descending"}},
            "yOffset": {"field": "half"},
            "x": {"field": "spend_usd", "type": "quantitative", "title": "spend ($)"},
            "color": {"field": "half", "type": "nominal", "legend": _legend(None)},
        },
    }  # fmt: skip
    return _chart(long, f"Largest spenders by {label}", spec)
