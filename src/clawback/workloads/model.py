"""What a workload is: a timeline of Messages API requests, plus labels no optimization can see.

A ``Step`` holds the request exactly as the client would send it (with the client's own ``cache_control``)
and, apart from it, the labels the benchmark scores quality with: the facts a conversation turn needs and
the equivalence class of a question. Labels never enter the request, so no stage can read them.
``at_s`` places the request on a simulated clock: the replay advances the simulator's clock between steps,
so prompt-cache TTLs see realistic gaps without anyone waiting.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Step", "StepLabels", "Workload"]


@dataclass(frozen=True, slots=True)
class StepLabels:
    """Ground truth about one request, kept outside it.

    ``needed_facts`` maps a fact name to the exact string the lead used (``"$437,500"``); a pruned request
    keeps the fact if that string is still in what reached the upstream. ``same_as`` is an equivalence class:
    two requests with the same class may share an answer; a cache answer across classes is a false hit.
    ``stale_facts``: values the conversation stated and later corrected; a pruned request's memory block must
    not present them as current.
    """

    session: str
    needed_facts: dict[str, str] = field(default_factory=dict)
    same_as: str | None = None
    stale_facts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Step:
    ref: str
    at_s: float
    request: dict[str, Any]
    labels: StepLabels


@dataclass(slots=True)
class Workload:
    """A named, reproducible stream of requests.

    ``output_tokens`` sizes the simulator's answers for this traffic (a chat reply, a JSON score, an agent's
    next move), since the simulator does not read the prompt to decide how much to say.
    ``turns_are_round_trips``: what a conversation "turn" means when reports count them. ``False``, a human
    turn (a user message that is not tool results); ``True``, an API round trip, as in agentic traffic, where one
    human instruction is followed by tens of tool round trips (the Agent SDK's ``max_turns`` counts these).
    """

    name: str
    description: str
    steps: list[Step]
    output_tokens: int = 128
    client_caching: str = "none"
    extras: dict[str, Any] = field(default_factory=dict)
    turns_are_round_trips: bool = False

    def __iter__(self) -> Iterator[Step]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def duration_s(self) -> float:
        return self.steps[-1].at_s - self.steps[0].at_s if self.steps else 0.0
