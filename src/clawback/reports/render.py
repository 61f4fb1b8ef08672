"""A ``PeriodReport`` as Markdown, or as one self-contained HTML file (charts embedded) that can be mailed.

The HTML embeds plotly.js once, inline, so the file needs nothing but a browser (no CDN, no network);
``pdf_ready`` adds print styles (A4 width, no interactive toolbar, a page break before each section) so that a
browser's "Print to PDF" gives a clean document. The charts are the dashboard's own figures
(``clawback.dashboard.figures``).
"""

from __future__ import annotations

import html
from decimal import Decimal
from typing import Any

import pandas as pd

from clawback.dashboard import figures
from clawback.reports.period import PeriodReport

__all__ = ["render_html", "render_markdown"]

_KINDS = {"key_id": "key", "team": "team", "feature": "feature", "user": "user", "session": "conversation",
          "agent": "agent"}  # fmt: skip


def _money(value: Decimal) -> str:
    return f"${value:,.4f}"


def _trend(now: Decimal, before: Decimal) -> str:
    if before == 0:
        return "new" if now else "-"
    change = float((now - before) / before)
    return f"{change:+.0%}"


def _lines(report: PeriodReport) -> dict[str, list[list[str]]]:
    """The report's tables as rows of text, shared by both formats."""
    tables: dict[str, list[list[str]]] = {}
    tables["Savings by optimization"] = [["optimization", "saved"]] + [
        [stage, _money(v)] for stage, v in sorted(report.savings_by_stage.items(), key=lambda kv: -kv[1])
    ]
    tables["Largest spenders"] = [["kind", "name", "spend", "previous period", "trend", "requests"]] + [
        [_KINDS.get(s.kind, s.kind), s.name, _money(s.cost), _money(s.previous), _trend(s.cost, s.previous),
         f"{s.requests:,}"]
        for s in report.spenders
    ]  # fmt: skip
    tables["Cache quality"] = [["cache", "hits", "eligible", "hit rate"]] + [
        [str(r["cache"]), f"{r['hits']:,.0f}", f"{r['eligible']:,.0f}", f"{r['hit_rate']:.1%}"]
        for _, r in report.caches.iterrows()
    ]
    pruning = report.savings_by_stage.get("pruning")
    if pruning is not None:
        requests = int(report.savings[report.savings["stage"] == "pruning"]["requests"].sum())
        per_request = _money(pruning / requests) if requests else "-"
        tables["Pruning"] = [["requests pruned", "saved", "saved per pruned request"],
                             [f"{requests:,}", _money(pruning), per_request]]  # fmt: skip
    tables["Latency (messages)"] = [["model", "requests", "p50 ms", "p90 ms", "p99 ms"]] + [
        [str(r["group"]), f"{r['requests']:,}", _ms(r["p50_ms"]), _ms(r["p90_ms"]), _ms(r["p99_ms"])]
        for _, r in report.latency.iterrows()
    ]
    if not report.cohorts.empty:
        tables["Holdout against treated"] = [["cohort", "requests", "cost per request", "95 % CI", "error rate"]] + [
            [str(r["cohort"]), f"{r['requests']:,}", f"${r['cost_per_request_usd']:,.6f}",
             f"±${r['ci95_usd']:,.6f}", f"{r['error_rate']:.2%}"]
            for _, r in report.cohorts.iterrows()
        ]  # fmt: skip
    tables["Anomalies"] = [["day", "spend", "usual range up to", "median"]] + [
        [f"{a.day:%Y-%m-%d}", _money(a.cost), _money(a.usual_max), _money(a.median)] for a in report.anomalies
    ]
    for name, frame in report.budgets.items():
        tables[f"Budget status ({name})"] = [list(map(str, frame.columns))] + [
            [str(v) for v in row] for row in frame.itertuples(index=False)
        ]
    return tables


def _ms(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:,.0f}"


def _headline(report: PeriodReport) -> list[str]:
    tr = report.range
    return [
        f"Period: {tr.start:%Y-%m-%d %H:%M} to {tr.end:%Y-%m-%d %H:%M} UTC ({report.period}).",
        f"Spent {_money(report.cost)} on {report.requests:,} requests ({report.errors:,} errors); it would have cost "
        f"{_money(report.counterfactual)} without clawback: {_money(report.saved)} saved ({report.saved_share:.1%}).",
        f"Previous {report.period}: {_money(report.previous_cost)} ({_trend(report.cost, report.previous_cost)}).",
        f"Anomalies: {len(report.anomalies)} day(s) above their usual range." if report.anomalies
        else "Anomalies: none (no day above its usual range).",
        "Budget status: " + (", ".join(report.budgets) if report.budgets else "no budgets defined."),
    ]  # fmt: skip


def render_markdown(report: PeriodReport) -> str:
    out = [f"# clawback {report.period} report", "", *[f"- {line}" for line in _headline(report)], ""]
    for title, rows in _lines(report).items():
        out += [f"## {title}", ""]
        if len(rows) == 1:
            out += ["None.", ""]
            continue
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "---|" * len(rows[0]))
        out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
        out.append("")
    return "\n".join(out)


_CSS = """
body { font-family: -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; } td, th { border: 1px solid #ccc; padding: 4px 8px; }
th { background: #f3f3f3; text-align: left; } .chart { margin: 1em 0; } h1 { margin-bottom: 0.2em; }
"""
_PRINT_CSS = """
@page { size: A4; margin: 15mm; } body { max-width: 180mm; margin: 0 auto; }
@media print { h2 { page-break-before: auto; break-after: avoid; } .chart, table { break-inside: avoid; } }
"""


def render_html(report: PeriodReport, *, pdf_ready: bool = False) -> str:
    """One HTML file: headline, embedded charts (plotly.js inline once), tables."""
    charts = [
        figures.spend_figure(report.spend_by_model, "model"),
        figures.savings_figure(report.savings),
        figures.daily_spend_figure(report.daily, _anomaly_frame(report)),
        figures.cache_figure(report.cache_series),
        figures.cohort_figure(report.cohorts),
    ]
    config = {"displayModeBar": False, "staticPlot": pdf_ready, "responsive": not pdf_ready}
    parts: list[str] = []
    first = True
    for fig in charts:
        if fig is None:
            continue
        fig.update_layout(template=figures.REPORT_TEMPLATE)
        if pdf_ready:
            fig.update_layout(width=680)
        parts.append('<div class="chart">' + fig.to_html(full_html=False, include_plotlyjs=first, config=config)
                     + "</div>")  # fmt: skip
        first = False
    tables = []
    for title, rows in _lines(report).items():
        tables.append(f"<h2>{html.escape(title)}</h2>")
        if len(rows) == 1:
            tables.append("<p>None.</p>")
            continue
        head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
        tables.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    headline = "".join(f"<li>{html.escape(line)}</li>" for line in _headline(report))
    css = _CSS + (_PRINT_CSS if pdf_ready else "")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>clawback {report.period} report</title><style>{css}</style></head><body>"
        f"<h1>clawback {report.period} report</h1><ul>{headline}</ul><h2>Charts</h2>{''.join(parts)}"
        f"{''.join(tables)}</body></html>\n"
    )


def _anomaly_frame(report: PeriodReport) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": [a.day for a in report.anomalies],
            "cost_micro_usd": [int(a.cost * 1_000_000) for a in report.anomalies],
        }
    )
