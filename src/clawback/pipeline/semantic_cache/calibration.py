"""The similarity threshold, chosen precision-first on the tuning files only.

``choose_threshold`` takes every tuning pair's similarity and whether the checks (``verify.verdict``) let it
through, and keeps the *lowest* threshold at which precision (right hits over the hits served at or above it) is
still at least ``target``, serving at least ``min_served`` hits: the most recall precision allows. The tuning
files are the calibration split and the nine holdouts written blind by other people (``evaluate.TUNING_SPLITS``);
the test split is never read here. ``clawback eval semantic --calibrate`` holds a target of 1.0 (no wrong hit on
any tuning file): leaving one file out of the tuning and scoring it blind, 0.995 let wrong hits through on
``holdout2.jsonl`` and 1.0 did not (``benchmarks/README.md``, semantic cache).

The alignment guard's ``word_similarity`` is chosen with it, from a few values, as the one whose threshold serves
the most right hits at the target precision. The chosen values ship in ``calibrated.json`` beside this module (with
the figures they were chosen on and the command that wrote them: ``clawback eval semantic --calibrate``);
``semantic_cache.threshold`` and ``semantic_cache.word_similarity`` override them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = [
    "CALIBRATION_FILE",
    "Calibration",
    "choose_threshold",
    "shipped_threshold",
    "shipped_word_similarity",
    "write_calibration",
]

CALIBRATION_FILE = Path(__file__).with_name("calibrated.json")


@dataclass(frozen=True, slots=True)
class Calibration:
    threshold: float
    precision: float
    recall: float
    served: int
    wrong: int


def choose_threshold(scored: Sequence[tuple[float, bool, bool]], *, target: float = 0.995, min_served: int = 20,
                     floor: float = 0.5) -> Calibration:  # fmt: skip
    """``scored``: (similarity, passes the guards, same) per calibration pair. See the module docstring."""
    passing = sorted(((s, same) for s, ok, same in scored if ok and s >= floor), key=lambda x: -x[0])
    positives = sum(1 for _, _, same in scored if same)
    best: Calibration | None = None
    served = wrong = 0
    for index, (similarity, same) in enumerate(passing):
        served += 1
        wrong += 0 if same else 1
        if index + 1 < len(passing) and passing[index + 1][0] == similarity:
            continue  # ties: a threshold serves all of them or none
        precision = (served - wrong) / served
        if precision >= target and served >= min_served:
            recall = (served - wrong) / positives if positives else 0.0
            best = Calibration(similarity, precision, recall, served, wrong)
    if best is None:
        return Calibration(1.0, 1.0, 0.0, 0, 0)
    return best


def write_calibration(
    result: Calibration,
    *,
    model: str,
    pairs: int,
    target: float,
    guards: dict[str, bool],
    word_similarity: float,
    tried: dict[str, Any],
    files: list[str],
    path: Path = CALIBRATION_FILE,
) -> dict[str, Any]:
    data = {
        "threshold": round(result.threshold, 4),
        "word_similarity": word_similarity,
        "tried": tried,
        "model": model,
        "target_precision": target,
        "calibration_files": files,
        "calibration_pairs": pairs,
        "calibration_precision": round(result.precision, 4),
        "calibration_recall": round(result.recall, 4),
        "calibration_served_hits": result.served,
        "calibration_wrong_hits": result.wrong,
        "guards": guards,
        "written_by": "clawback eval semantic --calibrate",
        "written_at": datetime.now(UTC).date().isoformat(),
    }
    path.write_text(json.dumps(data, indent=2) + "\n")
    shipped_threshold.cache_clear()
    shipped_word_similarity.cache_clear()
    return data


@lru_cache(maxsize=1)
def shipped_word_similarity() -> float:
    """The alignment guard's word similarity chosen with the threshold."""
    return float(json.loads(CALIBRATION_FILE.read_text()).get("word_similarity", 0.5))


@lru_cache(maxsize=1)
def shipped_threshold() -> float:
    """The calibrated threshold shipped with the package."""
    return float(json.loads(CALIBRATION_FILE.read_text())["threshold"])
