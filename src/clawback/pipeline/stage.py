"""The stage protocol and the pipeline that chains stages as an onion."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from clawback.pipeline.context import Reply, RequestContext

__all__ = ["CallNext", "Pipeline", "Stage"]

CallNext = Callable[[RequestContext], Awaitable[Reply]]


class Stage(Protocol):
    """A step of the pipeline. It may answer on its own, change ``ctx`` before ``call_next``, or watch the
    reply on its way back, as ASGI middleware does."""

    name: str

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply: ...


class Pipeline:
    """Stages in order, ending in a terminal handler (the upstream call)."""

    def __init__(self, stages: Sequence[Stage], terminal: CallNext) -> None:
        self.stages = list(stages)
        self.terminal = terminal
        handler = terminal
        for stage in reversed(self.stages):
            handler = self._link(stage, handler)
        self._entry = handler

    @staticmethod
    def _link(stage: Stage, call_next: CallNext) -> CallNext:
        async def run(ctx: RequestContext) -> Reply:
            return await stage.handle(ctx, call_next)

        return run

    async def __call__(self, ctx: RequestContext) -> Reply:
        return await self._entry(ctx)
