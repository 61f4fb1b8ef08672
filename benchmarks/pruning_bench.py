"""Pruning a 100-turn conversation: p50 / p99 latency of the pruning stage's work, without the summarizer.

Usage: ``.venv/bin/python benchmarks/pruning_bench.py [--runs 500]``. Three conversations: the longest lead chat
of the ``lead_chat`` workload extended to 100 human turns, a tool-using variant (every turn a tool_use /
tool_result pair with a 1.5 kB output), and a coding agent's loop of 100 round trips after the longest
``agentic`` session (for agents a turn is a round trip; the planner is on, so the frontier is priced in). Two regimes:

* ``warm``: the gateway's steady state. The same history reached the gateway one turn earlier, so each
  message's extracted facts and relevance terms are memoized (bounded LRU caches keyed by message text).
* ``cold``: those caches cleared before every run (a history never seen before: after a restart, say).

Both wall-clock time and the thread's CPU time are reported: on a shared machine the wall p99 includes time
the process was not scheduled.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Any

from clawback.bench.pruning_eval import above_planner
from clawback.config import PruningSettings
from clawback.pipeline.pruning import facts, relevance
from clawback.pipeline.pruning.stage import PruningStage
from clawback.pricing import PriceBook
from clawback.workloads import build_workload


def lead_chat_100() -> dict[str, Any]:
    workload = build_workload("lead_chat")
    longest = max((s.request for s in workload), key=lambda r: len(r["messages"]))
    history = longest["messages"][:-1]
    messages: list[dict[str, Any]] = []
    while len(messages) < 198:
        messages.extend({**m, "content": f"{m['content']} ({len(messages)})"} for m in history)
    return {**longest, "messages": [*messages[:198], longest["messages"][-1]]}


def tool_chat_100() -> dict[str, Any]:
    base = lead_chat_100()
    messages: list[dict[str, Any]] = []
    for i, message in enumerate(base["messages"][:-1]):
        if message["role"] == "user":
            messages.append(message)
            continue
        call = {"type": "tool_use", "id": f"toolu_{i:05d}", "name": "search_listings", "input": {"q": i}}
        messages.append({"role": "assistant", "content": [{"type": "text", "text": "Checking."}, call]})
        output = f"BW-{i} 3 bed, 2 bath, Riverside, $512,000, garage, near school. " * 25
        result = {"type": "tool_result", "tool_use_id": call["id"], "content": output}
        messages.append({"role": "user", "content": [result]})
        messages.append(message)
    return {**base, "messages": [*messages, base["messages"][-1]]}


def agent_loop_100() -> dict[str, Any]:
    """A coding agent's long tool loop: the longest session of the ``agentic`` workload (its earlier turns kept
    as they are), then one human instruction followed by 100 round trips, cycling through every tool round trip
    of that session (file reads, searches, test runs) with fresh tool ids. For agents a "turn" is a round trip."""
    workload = build_workload("agentic")
    longest = max((s.request for s in workload), key=lambda r: len(r["messages"]))
    history = longest["messages"]
    pairs = [
        (history[i], history[i + 1]) for i in range(len(history) - 1)
        if history[i]["role"] == "assistant" and isinstance(history[i]["content"], list)
        and any(b.get("type") == "tool_use" for b in history[i]["content"])
    ]  # fmt: skip
    messages = [
        *history,
        {"role": "assistant", "content": "Done: the tests pass."},
        {"role": "user", "content": "Now add the same checks to the export module."},
    ]
    for n in range(100):
        call, result = (dict(m) for m in pairs[n % len(pairs)])
        ident = f"toolu_bench_{n:04d}"
        call["content"] = [{**b, "id": ident} if b.get("type") == "tool_use" else b for b in call["content"]]
        result["content"] = [
            {**{k: v for k, v in b.items() if k != "cache_control"}, "tool_use_id": ident}
            if b.get("type") == "tool_result" else b for b in result["content"]
        ]  # fmt: skip
        messages += [call, result]
    last = messages[-1]["content"]
    last[-1] = {**last[-1], "cache_control": {"type": "ephemeral"}}  # the agent's moving breakpoint
    return {**longest, "messages": messages}


def clear_memos() -> None:
    """Every memo of the pruning modules (by what they are, so that a memo added later is cleared too)."""
    for module in (facts, relevance):
        for value in vars(module).values():
            if hasattr(value, "cache_clear"):
                value.cache_clear()


def measure(body: dict[str, Any], runs: int, *, cold: bool) -> dict[str, float]:
    policy = PruningSettings(enabled=True)
    book = PriceBook.bundled()
    stage = above_planner(PruningStage(policy, book), book)
    stage.prune_body(body, policy)  # warm-up (imports, the first compaction)
    wall: list[float] = []
    cpu: list[float] = []
    gc.collect()
    for _ in range(runs):
        if cold:
            clear_memos()
        w, c = time.perf_counter(), time.thread_time()
        outcome = stage.prune_body(body, policy)
        cpu.append((time.thread_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    assert outcome.plan is not None

    def p(values: list[float], q: float) -> float:
        return sorted(values)[min(len(values) - 1, int(q * len(values)))]

    return {"p50_ms": statistics.median(wall), "p99_ms": p(wall, 0.99), "cpu_p50_ms": statistics.median(cpu),
            "cpu_p99_ms": p(cpu, 0.99)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    args = parser.parse_args()
    bodies = (
        ("lead chat, 100 turns", lead_chat_100()),
        ("tool-using chat, 100 turns", tool_chat_100()),
        ("agent loop, 100 round trips", agent_loop_100()),
    )
    for name, body in bodies:
        for regime in ("warm", "cold"):
            r = measure(body, args.runs, cold=regime == "cold")
            print(
                f"{name:29s} {regime}: p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  "
                f"(CPU p50 {r['cpu_p50_ms']:.2f} ms, p99 {r['cpu_p99_ms']:.2f} ms)  [{len(body['messages'])} messages]"
            )


if __name__ == "__main__":
    main()
