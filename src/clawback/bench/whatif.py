"""What clawback would have saved on your own traffic, before you deploy it.

The log holds one Messages API request per line with a timestamp, in any of these shapes::

    {"timestamp": "2026-11-20T10:00:00Z", "request": {...}, "response": {"usage": {...}}}
    {"timestamp": 1763632800.5, "body": {...}, "usage": {...}}
    {"timestamp": "...", "model": "...", "max_tokens": ..., "messages": [...]}      (the request itself)

``usage`` (top level or inside ``response``) is optional; when present it makes the figures better.

How: the log becomes a workload on its own timeline (the gaps between timestamps move the simulator's
clock, so prompt-cache TTLs expire as they did for you) and goes through the savings harness: once straight
to the simulator as you sent it (the baseline), once through the full pipeline, once per optimization.

Measured vs estimated, stated in the output too:

- measured from the log: the requests themselves (sizes, models, your own ``cache_control``), the gaps
  between them, how many are byte-identical repeats; and, when the log carries ``usage``, what the requests
  really cost (priced by clawback's price table).
- estimated by the replay: token counts (clawback's estimator, not Anthropic's tokenizer: the log's
  ``usage`` shows how close it is), prompt-cache hits and writes (the simulator follows the documented
  rules), the answers' length (the logged ``output_tokens``, else ``--output-tokens``: the replay caps each
  request's ``max_tokens`` at that, identically in every run), the optimized cost and each optimization's
  share. Streaming is replayed as plain JSON (same price). The headline saving is the simulated reduction
  applied to the logged cost when there is one, otherwise to the simulated baseline.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from clawback.api.errors import ApiError
from clawback.api.messages import validate_messages_request
from clawback.api.usage import Usage
from clawback.config import Settings
from clawback.pricing import load_price_book, usd
from clawback.workloads.model import Step, StepLabels, Workload

__all__ = ["ESTIMATED", "MEASURED", "LogError", "LoggedRequest", "read_log", "whatif"]

_NOT_REQUEST_KEYS = {"timestamp", "ts", "time", "request", "body", "response", "usage"}
DEFAULT_OUTPUT_TOKENS = 256

MEASURED = [
    "requests, models, sizes and your own cache_control, as logged",
    "gaps between requests (from the timestamps)",
    "byte-identical repeats in the log",
    "your actual cost, when the log carries usage (priced by clawback's price table)",
]
ESTIMATED = [
    "token counts (clawback's estimator, not Anthropic's tokenizer)",
    "prompt-cache reads and writes (simulated from the documented rules)",
    "answer lengths (logged output_tokens, else --output-tokens)",
    "the optimized cost and each optimization's share (replay through the pipeline in the simulator)",
    "cache false-hit rates cannot be measured: the log has no labels of which questions are the same",
]


class LogError(ValueError):
    """A log line that is not a request: the message names the line."""


@dataclass(frozen=True, slots=True)
class LoggedRequest:
    line: int
    timestamp: float
    request: dict[str, Any]
    usage: Usage | None


def _timestamp(value: Any, line: int) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) / 1000 if value > 1e11 else float(value)  # epoch milliseconds or seconds
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    raise LogError(f"line {line}: timestamp must be ISO 8601 or epoch seconds, got {value!r}")


def read_log(path: Path) -> list[LoggedRequest]:
    """Parse and check every line; blank lines are skipped."""
    entries = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                data = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise LogError(f"line {number}: not JSON ({exc})") from None
            if not isinstance(data, dict):
                raise LogError(f"line {number}: expected a JSON object")
            stamp = next((data[k] for k in ("timestamp", "ts", "time") if k in data), None)
            if stamp is None:
                raise LogError(f"line {number}: no timestamp")
            request = data.get("request") or data.get("body")
            if not isinstance(request, dict):
                request = {k: v for k, v in data.items() if k not in _NOT_REQUEST_KEYS}
            try:
                validate_messages_request(request, strict=False)
            except ApiError as exc:
                raise LogError(f"line {number}: not a Messages API request ({exc})") from None
            response = data.get("response")
            usage = data.get("usage") or (response.get("usage") if isinstance(response, dict) else None)
            logged = Usage.from_api(usage) if isinstance(usage, dict) else None
            entries.append(LoggedRequest(number, _timestamp(stamp, number), request, logged))
    if not entries:
        raise LogError(f"{path}: no requests")
    return entries


def _canonical(request: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


def to_workload(entries: list[LoggedRequest], output_tokens: int) -> Workload:
    """The log as a workload: timestamps become the timeline; each request's answer length is fixed."""
    ordered = sorted(entries, key=lambda e: (e.timestamp, e.line))
    start = ordered[0].timestamp
    steps = []
    for entry in ordered:
        request = dict(entry.request)
        request.pop("stream", None)
        target = entry.usage.output_tokens if entry.usage and entry.usage.output_tokens else output_tokens
        request["max_tokens"] = max(1, min(int(request["max_tokens"]), target))
        metadata = request.get("metadata")
        session = str(metadata.get("user_id")) if isinstance(metadata, dict) and metadata.get("user_id") else "log"
        labels = StepLabels(session=session, same_as=_canonical(entry.request))
        steps.append(Step(ref=f"line{entry.line}", at_s=entry.timestamp - start, request=request, labels=labels))
    most = max(int(s.request["max_tokens"]) for s in steps)
    return Workload("your log", "requests replayed from a user's log", steps, output_tokens=max(1, most))


def whatif(
    path: Path,
    *,
    settings: Settings | None = None,
    output_tokens: int = DEFAULT_OUTPUT_TOKENS,
    console: Console | None = None,
) -> dict[str, Any]:
    """Replay the log and return the report (also what ``--json`` prints)."""
    from clawback.bench.savings import run_configurations, summarize

    settings = settings or Settings()
    entries = read_log(path)
    workload = to_workload(entries, output_tokens)
    price_book = load_price_book(settings.pricing)
    logged = [e for e in entries if e.usage is not None]
    logged_micro = sum(price_book.cost(str(e.request["model"]), e.usage).micro_usd for e in logged if e.usage)
    repeats = len(entries) - len({_canonical(e.request) for e in entries})
    results, elapsed = run_configurations([workload], base=settings, console=console)
    report = summarize(results, elapsed, seed=0, scale=1.0)
    figures = report["workloads"][workload.name]
    for run in [figures["optimized"], *figures["by_optimization"].values()]:
        run["false_hit_rate"] = None  # no labels: a hit cannot be judged
    reduction = figures["cost_reduction"]
    fully_logged = bool(logged) and len(logged) == len(entries)
    basis = usd(logged_micro) if fully_logged else figures["baseline_cost_usd"]
    simulated_tokens = results[workload.name][0].usage
    logged_input = sum(e.usage.total_input_tokens for e in logged if e.usage)
    return {
        "log": str(path),
        "requests": len(entries),
        "span_s": round(workload.duration_s, 1),
        "exact_repeats": repeats,
        "logged_usage_lines": len(logged),
        "logged_cost_usd": round(usd(logged_micro), 6) if logged else None,
        "token_estimate_ratio": (
            round(simulated_tokens.total_input_tokens / logged_input, 3) if fully_logged and logged_input else None
        ),
        "simulated_baseline_cost_usd": figures["baseline_cost_usd"],
        "simulated_optimized_cost_usd": figures["optimized_cost_usd"],
        "cost_reduction": reduction,
        "estimated_savings_usd": round(basis * reduction, 6),
        "savings_basis": "logged cost" if fully_logged else "simulated baseline",
        "baseline": figures["baseline"],
        "optimized": figures["optimized"],
        "by_optimization": figures["by_optimization"],
        "optimizations": report["optimizations"],
        "consistent": report["consistent"],
        "measured": MEASURED,
        "estimated": ESTIMATED,
        "_results": results,
    }
