"""Reference workloads: seeded, reproducible Messages API traffic with quality labels kept outside it.

``build_workload(name, seed=0, scale=1.0)`` returns a ``Workload``; ``scale`` shrinks it for tests and the
demo (``0.1`` is about a tenth of the requests). ``real_estate_mix`` is the demo's blend of all four
real-estate workloads on one timeline.
"""

from __future__ import annotations

from collections.abc import Callable

from clawback.workloads.agentic import agentic
from clawback.workloads.model import Step, StepLabels, Workload
from clawback.workloads.real_estate import faq, lead_chat, lead_scoring, property_match

__all__ = ["WORKLOADS", "Step", "StepLabels", "Workload", "build_workload", "real_estate_mix"]

WORKLOADS: dict[str, Callable[[int, float], Workload]] = {
    "lead_chat": lead_chat,
    "lead_scoring": lead_scoring,
    "property_match": property_match,
    "faq": faq,
    "agentic": agentic,
}


def build_workload(name: str, seed: int = 0, scale: float = 1.0) -> Workload:
    if name == "real_estate_mix":
        return real_estate_mix(seed, scale)
    try:
        factory = WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}") from None
    return factory(seed, scale)


def real_estate_mix(seed: int = 0, scale: float = 0.1) -> Workload:
    """The real-estate assistant's traffic on one timeline: chats, a scoring job, matching and FAQ."""
    parts = [lead_chat(seed, scale), lead_scoring(seed, scale), property_match(seed, scale), faq(seed, scale)]
    steps = sorted((step for part in parts for step in part), key=lambda s: (s.at_s, s.ref))
    return Workload(
        "real_estate_mix",
        "a real-estate lead assistant's traffic: chats, a scoring job, property matching, FAQ",
        steps,
        output_tokens=120,
        client_caching="as in each part (a system breakpoint on the lead chat only)",
    )
