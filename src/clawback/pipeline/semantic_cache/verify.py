"""Every check a candidate above the threshold must pass, in one place: the stage, the calibration and the guard
ablation of ``clawback eval semantic`` all ask ``verdict``, so what is measured is what serves.

Order, cheapest first: the guards (``guards.check``, token rules per false-hit class), what a question is about
(``topic``: shared words only in a modifier, a request to act against a question), the near-copy check
(``edits.near_copy``, the shape of the edit), then the word alignment (``alignment.Aligner``, which may embed
words with the model).
"""

from __future__ import annotations

from clawback.config import SemanticGuards
from clawback.pipeline.semantic_cache.alignment import Aligner
from clawback.pipeline.semantic_cache.edits import near_copy
from clawback.pipeline.semantic_cache.guards import GUARD_NAMES, check
from clawback.pipeline.semantic_cache.topic import modifier_only, request_differs

__all__ = ["CHECK_NAMES", "verdict"]

CHECK_NAMES = (*GUARD_NAMES, "topic", "request", "near_copy", "alignment")
"""Every switch of ``SemanticGuards``, each measured on its own by the guard ablation."""


def verdict(stored: str, asked: str, guards: SemanticGuards, aligner: Aligner) -> str | None:
    """The name of the first check that refuses ``asked`` an answer stored for ``stored``, or None."""
    reason = check(stored, asked, guards)
    if reason is None and guards.topic and modifier_only(stored, asked):
        reason = "topic"
    if reason is None and guards.request and request_differs(stored, asked):
        reason = "request"
    if reason is None and guards.near_copy and near_copy(stored, asked) is not None:
        reason = "near_copy"
    if reason is None and guards.alignment and aligner.unexplained(stored, asked):
        reason = "alignment"
    return reason
