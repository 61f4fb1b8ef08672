"""What the flags stage costs a request (on demand, not CI): microseconds per decision, in process.

The decision is on the hot path of every request: the request's identity (the opening message hashed, or the
session header), a bucket hash per flag whose rollout is partial, the holdout's hash when there is one, and the
labels. Printed for a 40-message conversation with three stages below: all flags at 100 %, every flag at a
partial rollout, and a 5 % holdout on top.

    .venv/bin/python benchmarks/flags_bench.py
"""

from __future__ import annotations

import timeit
from datetime import UTC, datetime

from clawback.config import FlagSettings
from clawback.pipeline.context import Reply, RequestContext, Tenant
from clawback.pipeline.flags import FlagsStage
from clawback.pipeline.stage import Pipeline
from clawback.storage.flags import FlagState

STAGES = ("exact_cache", "pruning", "prompt_cache")


class Below:
    modes = ("off", "shadow", "on")

    def __init__(self, name: str) -> None:
        self.name = name

    async def handle(self, ctx: RequestContext, call_next: object) -> Reply:
        raise NotImplementedError

    def bind(self, chain: object) -> None:
        pass

    async def aclose(self) -> None:
        pass


class Store:
    def __init__(self, flags: dict[str, FlagState]) -> None:
        self.current = flags


async def _terminal(ctx: RequestContext) -> Reply:
    return Reply(200, [])


def body() -> dict[str, object]:
    messages: list[dict[str, object]] = [{"role": "user", "content": "Find me a 3 bedroom house near Riverside. " * 20}]
    for i in range(20):
        messages += [{"role": "assistant", "content": f"Answer {i} " * 40}, {"role": "user", "content": f"Q {i}"}]
    return {"model": "claude-sonnet-4-6", "max_tokens": 256, "messages": messages}


def main() -> None:
    now = datetime.now(UTC)
    cases = {
        "all flags at 100 %": ({}, FlagSettings()),
        "3 partial rollouts": ({n: FlagState(n, "on", 50.0, now) for n in STAGES}, FlagSettings()),
        "3 partial + 5 % holdout": (
            {n: FlagState(n, "on", 50.0, now) for n in STAGES},
            FlagSettings(holdout_percent=5),
        ),
        "session header, 100 %": ({}, FlagSettings()),
    }
    request = body()

    def context_only() -> None:
        RequestContext("r", "messages", request, None, tenant=Tenant(key_id="key_1"))

    runs = 20_000
    base = min(timeit.repeat(context_only, number=runs, repeat=5)) / runs * 1e6
    print(f"{'building the context alone':<26} {base:6.2f} us (subtracted below)")
    for label, (flags, settings) in cases.items():
        stage = FlagsStage(settings, Store(flags))  # type: ignore[arg-type]
        Pipeline([stage, *(Below(n) for n in STAGES)], _terminal)  # type: ignore[list-item]
        session = "sess-123" if "session" in label else None

        def decide(stage: FlagsStage = stage, session: str | None = session) -> None:
            ctx = RequestContext("r", "messages", request, None, tenant=Tenant(key_id="key_1", session_id=session))
            stage.decide(ctx)

        seconds = min(timeit.repeat(decide, number=runs, repeat=5))
        print(f"{label:<26} {seconds / runs * 1e6 - base:6.2f} us per decision")


if __name__ == "__main__":
    main()
