"""What the relation-word order check and the negation-scope check refuse that nothing else refuses.

    .venv/bin/python benchmarks/semantic_order_cost.py      # ~1 min on 2 cores

Over every pair of every corpus file (tuning files and the test split) at similarity >= 0.7, for each rule
(``structure.related_differently`` under ``order``, ``structure.negated_differently`` under ``negation``): the pairs
it fires on that every other check (``verify.verdict`` with this one rule switched off) lets through, printed one
per line, then the count of paraphrases and negatives per file. A paraphrase counted here is recall the rule costs.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from clawback.config import SemanticGuards
from clawback.embeddings import shared_embedder
from clawback.pipeline.semantic_cache import guards
from clawback.pipeline.semantic_cache.alignment import Aligner
from clawback.pipeline.semantic_cache.calibration import shipped_word_similarity
from clawback.pipeline.semantic_cache.evaluate import CORPUS_SPLITS, MemoEmbedder, corpus_path, load_pairs, similarities
from clawback.pipeline.semantic_cache.structure import negated_differently, related_differently
from clawback.pipeline.semantic_cache.verify import verdict


def _fires(rule: str, a: str, b: str) -> bool:
    if rule == "related_differently":
        return related_differently(guards.clauses(a), guards.clauses(b))
    return negated_differently(guards.clauses(a), guards.clauses(b), guards._NEGATORS)


def main() -> None:
    embedder = MemoEmbedder(shared_embedder("all-MiniLM-L6-v2", 1))
    aligner = Aligner(embedder, shipped_word_similarity())
    loaded = {split: load_pairs(corpus_path(split)) for split in CORPUS_SPLITS}
    sims = {split: similarities(pairs, embedder) for split, pairs in loaded.items()}
    for rule in ("related_differently", "negated_differently"):
        original = getattr(guards, rule)
        totals = {True: 0, False: 0}
        for split, pairs in loaded.items():
            counts = {True: 0, False: 0}
            for pair, similarity in zip(pairs, sims[split], strict=True):
                if similarity < 0.7 or not _fires(rule, pair.a, pair.b):
                    continue
                setattr(guards, rule, lambda *args: False)  # every other check, this rule off
                try:
                    passes_others = verdict(pair.a, pair.b, SemanticGuards(), aligner) is None
                finally:
                    setattr(guards, rule, original)
                if passes_others:
                    counts[pair.same] += 1
                    label = "paraphrase" if pair.same else "negative"
                    print(f"{rule} {split} {label} {similarity:.3f} {pair.kind}: {pair.a} / {pair.b}")
            totals[True] += counts[True]
            totals[False] += counts[False]
            print(f"{rule} {split}: paraphrases refused {counts[True]}, negatives refused {counts[False]}")
        print(f"{rule} all files: paraphrases refused {totals[True]}, negatives refused {totals[False]}")


if __name__ == "__main__":
    main()
