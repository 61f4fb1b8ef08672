"""The semantic cache's checks: does a verifier chosen on some files hold on a file it never saw, and what it costs.

    .venv/bin/python benchmarks/semantic_verify.py            # ~2 min on 2 cores

1. **Leave one file out.** For each tuning file (``evaluate.TUNING_SPLITS``: the calibration split and the two
   holdouts written blind by other people), the threshold and the word alignment's word similarity are chosen
   exactly as ``clawback eval semantic --calibrate`` chooses them (``calibration.choose_threshold``, the same
   candidate word similarities, every check through ``verify.verdict``) on the *other two* files, then the left-out
   file and the test split are scored at that setting. Run with the near-copy check on (the shipped checks) and
   off (the checks before it), at the precision targets 0.995 and 1.0. This is the closest the corpus comes to a
   new blind file: the figures of the left-out file are what a setting chosen without it does on it. (The guards'
   word lists were written while reading calibration and holdout pairs; only holdout2's wrong hits were never
   turned into guard rules, so its row is the fairest.)
2. **Cost per candidate.** Each check timed alone on every tuning pair (a stored question and a candidate above
   any threshold: the work ``choose`` does per candidate): p50 / p99 in microseconds, the word alignment warm (its
   word vectors memoised, as in a running stage) and the embedding of one question for scale.

Scoring a pair offline is the stage's own decision (each pair is alone in its partition in ``clawback eval
semantic``: a hit is similarity >= threshold and ``verdict`` is None); ``clawback eval semantic --pairs`` gives the
same counts through the stage. Figures land in ``benchmarks/semantic_verify.json`` and on stdout.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from clawback.config import SemanticGuards
from clawback.embeddings import shared_embedder
from clawback.pipeline.semantic_cache.alignment import Aligner
from clawback.pipeline.semantic_cache.calibration import choose_threshold
from clawback.pipeline.semantic_cache.edits import near_copy
from clawback.pipeline.semantic_cache.evaluate import TUNING_SPLITS, MemoEmbedder, Pair, corpus_path, load_pairs
from clawback.pipeline.semantic_cache.guards import check
from clawback.pipeline.semantic_cache.verify import verdict

HERE = Path(__file__).resolve().parent
WORD_SIMILARITIES = (0.2, 0.3, 0.4, 0.5, 0.6)  # those --calibrate tries


def score(pairs: list[Pair], sims: list[float], passes: list[bool], threshold: float) -> dict[str, Any]:
    served = [p for p, s, ok in zip(pairs, sims, passes, strict=True) if ok and s >= threshold]
    wrong = sum(not p.same for p in served)
    positives = sum(p.same for p in pairs)
    return {"served": len(served), "wrong": wrong,
            "precision": round((len(served) - wrong) / len(served), 4) if served else None,
            "recall": round((len(served) - wrong) / positives, 4)}  # fmt: skip


def main() -> None:
    embedder = MemoEmbedder(shared_embedder("all-MiniLM-L6-v2", 1))
    files = {name: load_pairs(corpus_path(name)) for name in (*TUNING_SPLITS, "test")}
    every = [p for pairs in files.values() for p in pairs]
    embedder.prefetch([t for p in every for t in (p.a, p.b)])
    sims = {name: [float(embedder.embed([p.a])[0] @ embedder.embed([p.b])[0]) for p in pairs]
            for name, pairs in files.items()}  # fmt: skip
    aligners = {ws: Aligner(embedder, ws) for ws in WORD_SIMILARITIES}
    variants = {"near_copy on": SemanticGuards(), "near_copy off": SemanticGuards(near_copy=False)}
    passes = {(label, ws, name): [verdict(p.a, p.b, guards, aligners[ws]) is None for p in pairs]
              for label, guards in variants.items() for ws in WORD_SIMILARITIES
              for name, pairs in files.items()}  # fmt: skip

    folds: list[dict[str, Any]] = []
    for label in variants:
        for target in (0.995, 1.0):
            for blind in TUNING_SPLITS:
                tune = [n for n in TUNING_SPLITS if n != blind]
                best: tuple[int, float, Any] | None = None
                for ws in WORD_SIMILARITIES:
                    scored = [(s, ok, p.same) for n in tune
                              for p, s, ok in zip(files[n], sims[n], passes[(label, ws, n)], strict=True)]  # fmt: skip
                    chosen = choose_threshold(scored, target=target)
                    if best is None or chosen.served - chosen.wrong > best[0]:
                        best = (chosen.served - chosen.wrong, ws, chosen)
                assert best is not None
                _, ws, chosen = best
                at = chosen.threshold
                row = {"checks": label, "target": target, "left_out": blind, "tuned_on": tune,
                       "threshold": round(at, 4), "word_similarity": ws,
                       "left_out_scored": score(files[blind], sims[blind], passes[(label, ws, blind)], at),
                       "test_scored": score(files["test"], sims["test"], passes[(label, ws, "test")], at)}  # fmt: skip
                folds.append(row)
                print(json.dumps(row))

    # cost per candidate: each check alone, on every tuning pair
    tuning = [p for n in TUNING_SPLITS for p in files[n]]
    aligner = aligners[0.3]
    for p in tuning:
        aligner.unexplained(p.a, p.b)  # warm: word vectors memoised, as in a running stage
    guards = SemanticGuards()

    def timed(fn: Any) -> dict[str, float]:
        samples = []
        for p in tuning:
            start = time.perf_counter()
            fn(p)
            samples.append(time.perf_counter() - start)
        us = np.asarray(samples) * 1e6
        return {"p50_us": round(float(np.percentile(us, 50)), 1), "p99_us": round(float(np.percentile(us, 99)), 1)}

    check(tuning[0].a, tuning[0].b, guards)
    cost = {
        "guards (features cached)": timed(lambda p: check(p.a, p.b, guards)),
        "near_copy": timed(lambda p: near_copy(p.a, p.b)),
        "alignment (warm)": timed(lambda p: aligner.unexplained(p.a, p.b)),
        "verdict (all checks)": timed(lambda p: verdict(p.a, p.b, guards, aligner)),
    }
    inner = embedder.inner
    embed_samples = []
    for p in tuning[:300]:
        start = time.perf_counter()
        inner.embed([p.b])
        embed_samples.append(time.perf_counter() - start)
    ms = np.asarray(embed_samples) * 1e3
    cost["embedding one question (ms)"] = {"p50_ms": round(float(np.percentile(ms, 50)), 2),
                                           "p99_ms": round(float(np.percentile(ms, 99)), 2)}  # fmt: skip
    print(json.dumps(cost))
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    out = {"folds": folds, "cost_per_candidate": cost, "loadavg_after": load, "python": platform.python_version()}
    (HERE / "semantic_verify.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
