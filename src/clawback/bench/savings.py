"""``clawback bench savings``: every optimization judged in dollars and quality by one harness.

For each workload: a baseline replay straight to the simulator, a replay through the gateway with every
optimization on ("full"), then one replay per optimization with only that one on. With ``holdout``, two more
replays of the full pipeline with half the conversations held out (``flags.holdout_percent`` 50), the second with
the other half (``holdout_offset`` 50): a crossover, so that every conversation is once treated and once held
out, and the treated-vs-holdout saving (``clawback.holdout.compare_cohorts``) is measured on the same
conversations the ledger's counterfactual is booked on. With ``shadow``, one more replay with every optimization in
shadow mode: what each stage says it would save, beside what it saves when on (its own replay). The optimizations are
discovered, not listed: every ``Settings`` section (or sub-section) with an ``enabled`` field is one, so a
stage that lands with its switch shows up here without touching this file.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from clawback.bench.harness import BASELINE, RunResult, replay
from clawback.config import Settings
from clawback.holdout import HoldoutComparison, compare_cohorts
from clawback.pricing import load_price_book, usd
from clawback.workloads import WORKLOADS, Workload, build_workload

__all__ = [
    "FULL",
    "HOLDOUT_RUNS",
    "SHADOW",
    "holdout_comparison",
    "optimization_names",
    "run_configurations",
    "run_savings",
    "summarize",
    "with_optimizations",
]

FULL = "full"
SHADOW = "shadow"
HOLDOUT_RUNS = ("holdout-a", "holdout-b")
"""The two crossover replays: the full pipeline, half the conversations held out, then the other half."""


def _sections(model: type[BaseModel], prefix: str = "", depth: int = 2) -> list[str]:
    found: list[str] = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            continue
        path = f"{prefix}{name}"
        if "enabled" in annotation.model_fields:
            found.append(path)
        elif depth > 1:
            found.extend(_sections(annotation, path + ".", depth - 1))
    return found


def optimization_names() -> list[str]:
    """Dotted paths of the ``Settings`` sections that switch an optimization on and off."""
    return _sections(Settings)


def _set_enabled(section: BaseModel, path: list[str], value: bool) -> BaseModel:
    if not path:
        return section.model_copy(update={"enabled": value})
    child = getattr(section, path[0])
    return section.model_copy(update={path[0]: _set_enabled(child, path[1:], value)})


def with_optimizations(settings: Settings, enabled: set[str]) -> Settings:
    """``settings`` with exactly the optimizations in ``enabled`` switched on, and none in shadow: pruning's
    default shadow (``pruning.shadow``) would run in every replay it is off in, and book would-be savings there
    that belong to the ``shadow`` replay."""
    for name in optimization_names():
        settings = _set_enabled(settings, name.split("."), name in enabled)  # type: ignore[assignment]
    return settings.model_copy(update={"pruning": settings.pruning.model_copy(update={"shadow": False})})


def configurations(base: Settings, *, holdout: bool = False, shadow: bool = False) -> list[tuple[str, Settings | None]]:
    names = optimization_names()
    full = with_optimizations(base, set(names))
    configs: list[tuple[str, Settings | None]] = [(BASELINE, None), (FULL, full)]
    configs += [(name, with_optimizations(base, {name})) for name in names]
    if holdout:
        for name, offset in zip(HOLDOUT_RUNS, (0.0, 50.0), strict=True):
            flags = full.flags.model_copy(update={"holdout_percent": 50.0, "holdout_offset": offset})
            configs.append((name, full.model_copy(update={"flags": flags})))
    if shadow:
        flags = full.flags.model_copy(update={"initial": dict.fromkeys(names, "shadow")})
        configs.append((SHADOW, full.model_copy(update={"flags": flags})))
    return configs


def holdout_comparison(runs: Sequence[RunResult]) -> HoldoutComparison | None:
    """Treated against held-out requests over both crossover replays (None: no holdout replays)."""
    return compare_cohorts([record for run in runs if run.config in HOLDOUT_RUNS for record in run.records])


def _usd(micro: int) -> float:
    return round(usd(micro), 6)


def summarize(results: dict[str, list[RunResult]], elapsed_s: float, *, seed: int, scale: float) -> dict[str, Any]:
    """The JSON report: per workload every configuration's figures, and the headline numbers."""
    workloads: dict[str, Any] = {}
    baseline_total = optimized_total = 0
    for name, runs in results.items():
        by_config = {run.config: run for run in runs}
        base, full = by_config[BASELINE], by_config[FULL]
        comparison = holdout_comparison(runs)
        baseline_total += base.simulator_micro_usd
        optimized_total += full.simulator_micro_usd
        workloads[name] = {
            "requests": base.requests,
            "baseline_cost_usd": _usd(base.simulator_micro_usd),
            "optimized_cost_usd": _usd(full.simulator_micro_usd),
            "cost_reduction": _reduction(base.simulator_micro_usd, full.simulator_micro_usd),
            "baseline": base.to_json(),
            "optimized": {
                **full.to_json(),
                "ledger_booked_share": _share(booked_share(full, base.simulator_micro_usd)),
            },
            "by_optimization": {
                run.config: {
                    **run.to_json(),
                    "cost_reduction": _reduction(base.simulator_micro_usd, run.simulator_micro_usd),
                    "ledger_booked_share": _share(booked_share(run, base.simulator_micro_usd)),
                }
                for run in runs
                if run.config not in (BASELINE, FULL, SHADOW, *HOLDOUT_RUNS)
            },
        }
        if SHADOW in by_config:
            workloads[name]["shadow"] = shadow_figures(runs)
        if comparison is not None:
            workloads[name]["holdout"] = comparison.as_dict()
    return {
        "workloads": workloads,
        "optimizations": optimization_names(),
        "baseline_cost_usd": _usd(baseline_total),
        "optimized_cost_usd": _usd(optimized_total),
        "cost_reduction": _reduction(baseline_total, optimized_total),
        "consistent": all(run.consistent for runs in results.values() for run in runs),
        "seed": seed,
        "scale": scale,
        "elapsed_s": round(elapsed_s, 1),
    }


def _reduction(baseline: int, optimized: int) -> float:
    return round(1 - optimized / baseline, 4) if baseline else 0.0


def run_savings(
    names: Sequence[str],
    *,
    seed: int = 0,
    scale: float = 1.0,
    base: Settings | None = None,
    console: Console | None = None,
    holdout: bool = False,
    shadow: bool = False,
) -> tuple[dict[str, list[RunResult]], float]:
    """Replay each named reference workload under every configuration, with a progress bar."""
    workloads = [build_workload(name, seed, scale) for name in names]
    return run_configurations(workloads, base=base, console=console, holdout=holdout, shadow=shadow)


def run_configurations(
    workloads: Sequence[Workload],
    *,
    base: Settings | None = None,
    console: Console | None = None,
    holdout: bool = False,
    shadow: bool = False,
) -> tuple[dict[str, list[RunResult]], float]:
    """Replay each workload as the baseline, with the full pipeline, and with each optimization alone (and, with
    ``holdout``, the two crossover replays; with ``shadow``, every optimization in shadow mode)."""
    base = base or Settings()
    console = console or Console(stderr=True)
    price_book = load_price_book(base.pricing)
    configs = configurations(base, holdout=holdout, shadow=shadow)
    results: dict[str, list[RunResult]] = {}
    started = time.perf_counter()
    columns = (TextColumn("{task.description:<32}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("replaying", total=sum(len(w) for w in workloads) * len(configs))
        for workload in workloads:
            for config, settings in configs:
                progress.update(task, description=f"{workload.name} / {config}")
                run = replay(
                    workload, config=config, settings=settings, price_book=price_book,
                    on_step=lambda _: progress.advance(task),
                )  # fmt: skip
                results.setdefault(workload.name, []).append(run)
    return results, time.perf_counter() - started


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _share(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def booked_share(run: RunResult, baseline_micro_usd: int) -> float | None:
    """What the gateway's ledger says the stages saved, as a share of the saving measured against the baseline
    (the simulator's bills of both runs): 100 % means the ledger proves exactly the dollars saved."""
    saved = baseline_micro_usd - run.simulator_micro_usd
    if run.config == BASELINE or saved <= 0:
        return None
    return sum(run.savings_by_stage.values()) / saved


def render(results: dict[str, list[RunResult]], console: Console) -> None:
    """One table per workload: configurations as rows, money, tokens, traffic, latency, quality."""
    for name, runs in results.items():
        base = runs[0].simulator_micro_usd
        table = Table(title=f"{name}  ({runs[0].requests} requests)", title_justify="left")
        for column in ("config", "cost $", "saved", "booked", "vs holdout", "input", "cache write", "cache read",
                       "output", "upstream", "p50 ms", "p99 ms", "fact retention", "cache hits",
                       "false-hit rate"):  # fmt: skip
            table.add_column(column, justify="left" if column == "config" else "right")
        for run in runs:
            if run.config in (SHADOW, *HOLDOUT_RUNS):
                continue
            figures = run.to_json()
            table.add_row(
                run.config + ("" if run.consistent else " [red](ledger/sim mismatch)[/]"),
                f"{usd(run.simulator_micro_usd):,.4f}",
                _pct(1 - run.simulator_micro_usd / base) if base and run.config != BASELINE else "",
                _pct(booked_share(run, base)),
                "",
                f"{run.usage.input_tokens:,}",
                f"{run.usage.cache_creation_input_tokens:,}",
                f"{run.usage.cache_read_input_tokens:,}",
                f"{run.usage.output_tokens:,}",
                f"{run.upstream_requests:,}",
                f"{figures['latency_p50_ms']:.1f}",
                f"{figures['latency_p99_ms']:.1f}",
                _pct(run.fact_retention),
                str(run.cache_hits),
                _pct(run.false_hit_rate),
            )
        comparison = holdout_comparison(runs)
        if comparison is not None:
            _holdout_row(table, comparison)
        console.print(table)
        if comparison is not None:
            console.print(_holdout_line(comparison), highlight=False)
        if any(run.config == SHADOW for run in runs):
            console.print(_shadow_line(shadow_figures(runs)), highlight=False)
        for run in runs:
            if run.config in (SHADOW, *HOLDOUT_RUNS) and not run.consistent:  # no row of their own: say it here
                sums = f"simulator {run.simulator_micro_usd}, harness {run.harness_micro_usd}, ledger"
                console.print(f"[red]{name}/{run.config}: ledger/sim mismatch: {sums} {run.ledger_micro_usd}[/]")
        errors = [run for run in runs if run.errors]
        for run in errors:
            console.print(f"[red]{name}/{run.config}: {run.errors} errors; first: {run.first_error}[/]")


def _holdout_row(table: Table, comparison: HoldoutComparison) -> None:
    """The crossover's row: the treated requests' cost, the saving measured against the held-out ones, what the
    ledger booked on the treated as a share of it, and the measured saving with its interval."""
    measured = comparison.measured_saving
    booked = comparison.booked_saving
    share = booked / measured.mean if booked is not None and measured.mean > 0 else None
    interval = "" if math.isnan(measured.half_width) else f" ± {measured.half_width:.1%}"
    treated = comparison.treated
    table.add_row(
        "holdout 50/50 (treated)", f"{usd(treated.cost_micro_usd):,.4f}", _pct(measured.mean), _pct(share),
        f"{measured.mean:.1%}{interval}", *[""] * 10,
    )  # fmt: skip


def shadow_figures(runs: Sequence[RunResult]) -> dict[str, dict[str, float | None]]:
    """Per optimization, in dollars: what the shadow replay says it would save, what its own replay (on, alone)
    saved against the baseline, and what it booked in the full pipeline (on, with the others)."""
    by_config = {run.config: run for run in runs}
    base, shadow, full = by_config[BASELINE].simulator_micro_usd, by_config[SHADOW], by_config[FULL]
    out: dict[str, dict[str, float | None]] = {}
    for name in optimization_names():
        alone = by_config.get(name)
        out[name] = {
            "would_save_usd": _usd(shadow.shadow_savings_by_stage.get(name, 0)),
            "saved_alone_usd": None if alone is None else _usd(base - alone.simulator_micro_usd),
            "booked_in_full_usd": _usd(full.savings_by_stage.get(name, 0)),
            "shadow_cost_change_usd": _usd(shadow.simulator_micro_usd - base),
        }
    return out


def _shadow_line(figures: dict[str, dict[str, float | None]]) -> str:
    parts = []
    for name, f in figures.items():
        alone = f["saved_alone_usd"]
        parts.append(f"{name} ${f['would_save_usd']:.4f} (on alone: " + ("-" if alone is None else f"${alone:.4f}")
                     + f", booked in full: ${f['booked_in_full_usd']:.4f})")  # fmt: skip
    change = next(iter(figures.values()))["shadow_cost_change_usd"] if figures else 0.0
    return f"shadow: would save {', '.join(parts)}; the shadow replay's bill vs the baseline: ${change:+.4f}"


def _holdout_line(comparison: HoldoutComparison) -> str:
    treated, held = comparison.treated, comparison.holdout
    measured, booked = comparison.measured_saving, comparison.booked_saving
    interval = "" if math.isnan(measured.half_width) else f" ± {measured.half_width:.1%} (95 %)"
    verdict = {True: "within the interval", False: "OUTSIDE the interval", None: "too few conversations to tell"}
    return (
        f"holdout: treated ${treated.cost_per_request_usd.mean:.5f}/request ({treated.requests} requests, "
        f"{treated.conversations} conversations) vs held out ${held.cost_per_request_usd.mean:.5f}/request "
        f"({held.requests}, {held.conversations}): saving {measured.mean:.1%}{interval}; the ledger books "
        f"{_pct(booked)} on the treated: {verdict[comparison.agrees]}"
    )


def workload_names(choice: str) -> list[str]:
    if choice == "all":
        return list(WORKLOADS)
    if choice not in WORKLOADS:
        raise ValueError(f"unknown workload {choice!r}; choose from all, {', '.join(WORKLOADS)}")
    return [choice]
