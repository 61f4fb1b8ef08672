"""Verification of a candidate by word alignment: every content word of one question needs a counterpart in the other.

The guards (``guards``) catch the false-hit classes whose words can be listed (negators, numbers, months, roles,
...). What no list covers is the one-word swap the lists have not seen: "required" / "optional", "mornings" /
"evenings", "recommend inspections" / "recommend an inspector", "pay rent online" / "see my lease online". Those
pairs score as high as true paraphrases, because a sentence embedding averages over the words they share. This
check looks at the words they do not share: each content word (not a function word, not a number: numbers have
their own guard) on one side must be on the other side too (same stem), or have a word there that the model puts
within ``word_similarity`` of it (each word embedded alone, with the same model, memoised). One unexplained word
refuses the candidate. It runs only on the few candidates above the threshold, in the embedding worker.

Only a *substitution* is checked: both sides have a content word the other lacks. A word added or dropped on one
side only ("Does the apartment come furnished?", "Am I eligible for a refund?") is how paraphrases differ; on the
calibration split, checking additions too refused 8 more true paraphrases (6 of them above 0.80) and not one more
negative (every negative it caught swaps a word: "keys early" / "a copy of the keys", "opt in" / "unsubscribe").
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

from clawback.embeddings.protocol import Embedder, Vectors
from clawback.pipeline.semantic_cache.guards import features, fold_words

__all__ = ["Aligner", "content_words", "is_content", "stem"]

# Function words and fillers a paraphrase adds or drops freely (English and Spanish, accents folded).
_FUNCTION = frozenset(fold_words(
    "the a an is are am was were be been being do does did doing done of to in on at for from by with about into "
    "out over under than then and or but if so as it its it's this that these those there here what which who whom "
    "whose when where why how can could would should will shall may might must i me my mine we us our you your "
    "yours they them their he she his her any some all much many more most very really just also still please "
    "thanks thank hi hello hey ok okay yes get got getting have has had make let tell know like want need wondering "
    "possible able way there's i'm i'd i've you're what's it's let's one ones thing things kind sort right now "
    "currently anything something someone anyone else other another each every such own same whether "
    "el la los las lo un una unos unas es son era ser estar esta este estos estas ese esa eso de del al a en por "
    "para con sin que como cual cuales cuando donde quien quienes cuanto cuanta cuantos cuantas hay habia mi mis "
    "tu tus su sus nuestro nuestra me te se le les nos yo usted ustedes ellos ellas y o pero si ya tambien todavia "
    "aun muy mas algo alguien alguna alguno algun favor gracias hola buenas buen dia puedo puede pueden podria "
    "podrian quiero quisiera necesito tengo tiene tienen saber decir ahi aqui alla entonces"
))  # fmt: skip


def stem(word: str) -> str:
    """A plural's singular, roughly ("cashiers" -> "cashier", "departamentos" -> "departamento")."""
    for suffix in ("es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def is_content(word: str) -> bool:
    """A folded word that carries what is asked: not a function word, not a number (numbers have their own guard),
    not a negated auxiliary (negation has its own guard)."""
    return len(word) >= 3 and word not in _FUNCTION and not word[:1].isdigit() and not word.endswith("n't")


def content_words(text: str) -> frozenset[str]:
    """The words that carry what is asked: folded, stemmed, without function words and numbers."""
    return frozenset(stem(word) for word in features(text).words if is_content(word))


class Aligner:
    """Word vectors from the sentence model, memoised (the vocabulary of a cache's questions is small)."""

    def __init__(self, embedder: Embedder, word_similarity: float, max_words: int = 200_000) -> None:
        self.embedder = embedder
        self.word_similarity = word_similarity
        self.max_words = max_words
        self._vectors: dict[str, Vectors] = {}
        self._lock = threading.Lock()

    def _vectorize(self, words: Iterable[str]) -> None:
        missing = [w for w in dict.fromkeys(words) if w not in self._vectors]
        if not missing:
            return
        vectors = self.embedder.embed(missing)
        with self._lock:
            if len(self._vectors) + len(missing) > self.max_words:
                self._vectors.clear()
            self._vectors.update(zip(missing, vectors, strict=True))

    def unexplained(self, stored: str, asked: str) -> str | None:
        """A content word of one side with no counterpart on the other, or None when every word is explained."""
        a, b = content_words(stored), content_words(asked)
        only_a, only_b = a - b, b - a
        if not only_a or not only_b:
            return None  # words added or dropped on one side only: how paraphrases differ, not near-misses
        self._vectorize([*a, *b])
        for extra, other in ((only_a, b), (only_b, a)):
            if not extra:
                continue
            if not other:
                return next(iter(sorted(extra)))
            matrix = np.stack([self._vectors[w] for w in sorted(other)])
            for word in sorted(extra):
                if float(np.max(matrix @ self._vectors[word])) < self.word_similarity:
                    return word
        return None
