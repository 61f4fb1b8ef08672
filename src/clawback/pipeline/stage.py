"""The stage protocol and the pipeline that chains stages as an onion.

What a stage may rely on, and what it owes:

* ``handle(ctx, call_next)``: answer on its own, change ``ctx`` before ``call_next``, or watch the reply on its
  way back, as ASGI middleware does.
* ``bind(chain)``: called by ``Pipeline`` when it is assembled. The ``Chain`` says which stages sit below this
  one (pruning asks whether the prompt-cache planner is among them: then the history it sends is cached) and
  gives the whole pipeline's entry (for requests a stage makes of its own, such as pruning's summary, so that
  the ledger books them).
* ``aclose()``: called once at shutdown, in the order of ``build.py`` (``Pipeline.aclose``); a stage closes
  only what it owns (its stores) and calls no other stage while closing.
* Close callbacks (``Reply.on_close``) run in the order they were added. A reply travels from the inner stages
  outwards, so inner stages add theirs first, and the ledger, the outermost stage (``build.py``), records last,
  after every stage below has booked its saving.
* A stage that offers an admin operation says so by implementing ``Invalidates`` or ``Reports``; the admin
  routes find it by that type (``Pipeline.invalidators``, ``Pipeline.reporters``), never by its name. A stage
  with Prometheus series of its own implements ``ExportsMetrics`` (``/metrics`` renders them after the
  gateway's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, runtime_checkable

from clawback.pipeline.context import Reply, RequestContext

__all__ = [
    "CallNext",
    "Chain",
    "ExportsMetrics",
    "Invalidates",
    "Pipeline",
    "Reports",
    "Stage",
]

CallNext = Callable[[RequestContext], Awaitable[Reply]]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Chain:
    """What a stage learns of the pipeline it was put in (``Stage.bind``)."""

    below: tuple[Stage, ...]
    """The stages between this one and the terminal call, outermost first."""
    entry: CallNext
    """The whole pipeline, from its outermost stage."""

    def has_below(self, kind: type[Any]) -> bool:
        """Whether a stage of class ``kind`` sits below."""
        return any(isinstance(stage, kind) for stage in self.below)


class Stage(Protocol):
    """A step of the pipeline (see the module docstring for the contract)."""

    name: str

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply: ...

    def bind(self, chain: Chain) -> None: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Invalidates(Protocol):
    """A stage holding stored replies that an operator may drop (``POST /admin/cache/invalidate``)."""

    name: str

    async def invalidate(self, *, key: str | None = None, namespace: str | None = None, tag: str | None = None) -> int:
        """Drop the entries matching every given selector; the number dropped."""
        ...


@runtime_checkable
class Reports(Protocol):
    """A stage with counters worth showing an operator (``GET /admin/cache/stats``, under its name)."""

    name: str

    def report(self) -> dict[str, Any]: ...


@runtime_checkable
class ExportsMetrics(Protocol):
    """A stage with Prometheus series of its own (its own registry), rendered on ``/metrics``."""

    name: str

    def render_metrics(self) -> bytes: ...


class Pipeline:
    """Stages in order, ending in a terminal handler (the upstream call)."""

    def __init__(self, stages: Sequence[Stage], terminal: CallNext) -> None:
        self.stages = list(stages)
        self.terminal = terminal
        handler = terminal
        for stage in reversed(self.stages):
            handler = self._link(stage, handler)
        self._entry = handler
        for index, stage in enumerate(self.stages):
            stage.bind(Chain(below=tuple(self.stages[index + 1 :]), entry=self.__call__))

    @staticmethod
    def _link(stage: Stage, call_next: CallNext) -> CallNext:
        async def run(ctx: RequestContext) -> Reply:
            return await stage.handle(ctx, call_next)

        return run

    async def __call__(self, ctx: RequestContext) -> Reply:
        return await self._entry(ctx)

    def find(self, kind: type[T]) -> T | None:
        """The first stage of class ``kind``, or None when it is not configured."""
        return next((stage for stage in self.stages if isinstance(stage, kind)), None)

    def invalidators(self) -> list[Invalidates]:
        """The stages that offer ``Invalidates``, outermost first."""
        return [stage for stage in self.stages if isinstance(stage, Invalidates)]

    def reporters(self) -> list[Reports]:
        """The stages that offer ``Reports``, outermost first."""
        return [stage for stage in self.stages if isinstance(stage, Reports)]

    def metric_exporters(self) -> list[ExportsMetrics]:
        """The stages that offer ``ExportsMetrics``, outermost first."""
        return [stage for stage in self.stages if isinstance(stage, ExportsMetrics)]

    async def aclose(self) -> None:
        """Close every stage, outermost first."""
        for stage in self.stages:
            await stage.aclose()
