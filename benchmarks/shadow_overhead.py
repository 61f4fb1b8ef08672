"""What pruning's default shadow costs the gateway per request: CPU of the pipeline with pruning off against the
default (``pruning.enabled`` false, ``pruning.shadow`` true: planned on every request, the original sent).

Usage: ``.venv/bin/python benchmarks/shadow_overhead.py [--workload lead_chat] [--repeats 3]``. The workload's
requests are replayed in order, as a client sends them (each one the whole history so far), through two
pipelines in one process, the pruning stage above the prompt-cache planner as ``build.py`` puts them, over a
terminal that answers at once (a fixed usage): one with pruning off (``shadow`` false), one with the default.
Each request goes through both, which one first alternating, and the thread's CPU time of each is recorded, so
both see the same load (the machine is shared). The pruning memos are cleared before each repeat: a repeat is
the gateway's first sight of every conversation, warm within a conversation as the gateway is (each request
repeats the history the previous one had). Figures by the request's human turns: p50 / p99 CPU off and shadow,
and the p50 of the difference per request.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

import orjson

from clawback.api.usage import Usage
from clawback.config import PromptCacheSettings, PruningSettings
from clawback.pipeline import Pipeline, Reply, RequestContext
from clawback.pipeline.prompt_cache import PromptCachePlanner
from clawback.pipeline.pruning import conversation, facts, pruner, relevance
from clawback.pipeline.pruning.stage import PruningStage
from clawback.pricing import PriceBook
from clawback.workloads import build_workload

_BINS = ((1, 9), (10, 29), (30, 59), (60, 10_000))
_USAGE_INPUT = 5_000


def clear_memos() -> None:
    """Every memo of the pruning modules (by what they are, so that a memo added later is cleared too)."""
    for module in (conversation, facts, pruner, relevance):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):
                value.cache_clear()


async def _terminal(ctx: RequestContext) -> Reply:
    # a fixed usage: counting the request's tokens here would cost both pipelines more than the planner does
    return Reply(status=200, headers=[], body=b"{}", usage=Usage(_USAGE_INPUT, 10))


def _pipeline(settings: PruningSettings, book: PriceBook) -> Pipeline:
    return Pipeline([PruningStage(settings, book), PromptCachePlanner(PromptCacheSettings(), book)], _terminal)


def _cpu_ms(loop: asyncio.AbstractEventLoop, pipeline: Pipeline, request: dict[str, Any], raw: bytes) -> float:
    ctx = RequestContext(request_id="r", endpoint="messages", body=request, raw_body=raw)
    start = time.thread_time()
    loop.run_until_complete(pipeline(ctx))
    return (time.thread_time() - start) * 1000


def _p99(values: list[float]) -> float:
    return sorted(values)[min(len(values) - 1, int(0.99 * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="lead_chat")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    book = PriceBook.bundled()
    off = _pipeline(PruningSettings(shadow=False), book)
    shadow = _pipeline(PruningSettings(), book)
    assert not PruningSettings().enabled and PruningSettings().shadow  # the shipped default is the shadow
    requests = [step.request for step in build_workload(args.workload)]
    raws = [orjson.dumps(r) for r in requests]
    turns = [sum(1 for m in r["messages"] if isinstance(m, dict) and m.get("role") == "user") for r in requests]
    loop = asyncio.new_event_loop()
    times: dict[str, list[tuple[int, float]]] = {"off": [], "shadow": []}
    for _ in range(args.repeats):
        clear_memos()
        gc.collect()
        for i, (request, raw, n) in enumerate(zip(requests, raws, turns, strict=True)):
            pair = (("off", off), ("shadow", shadow)) if i % 2 == 0 else (("shadow", shadow), ("off", off))
            for label, pipeline in pair:
                times[label].append((n, _cpu_ms(loop, pipeline, request, raw)))
    loop.close()
    print(f"{args.workload}: {len(requests)} requests x {args.repeats} repeats, CPU per request (ms)")
    for low, high in _BINS:
        pick = [i for i, (n, _) in enumerate(times["off"]) if low <= n <= high]
        if not pick:
            continue
        o = [times["off"][i][1] for i in pick]
        s = [times["shadow"][i][1] for i in pick]
        added = statistics.median(b - a for a, b in zip(o, s, strict=True))
        print(
            f"  {low:>2}-{high if high < 10_000 else '':<3} turns ({len(pick):4d} requests): off p50 "
            f"{statistics.median(o):.3f} p99 {_p99(o):.3f} | shadow p50 {statistics.median(s):.3f} p99 "
            f"{_p99(s):.3f} | added p50 {added:.3f}"
        )


if __name__ == "__main__":
    main()
