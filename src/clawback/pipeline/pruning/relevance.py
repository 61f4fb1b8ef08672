"""Relevance: which older turns matter to what the user is asking now (lexical BM25 scoring).

Lexical scoring is the default because it is fast (well under a millisecond for a hundred turns), needs no
model weights and is deterministic across machines, which the cache-stable pruning relies on. An embedding
scorer can be plugged in through ``Scorer``; it must be deterministic too.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence
from itertools import filterfalse, repeat
from typing import Protocol

from clawback.pipeline.pruning.conversation import fold

__all__ = ["Bm25Scorer", "Scorer", "select_relevant", "terms"]

_WORD = re.compile(r"[a-z0-9$][a-z0-9$'.-]*[a-z0-9]|[a-z0-9]", re.IGNORECASE)
_WORD_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789$'.-")
_SEPARATORS = bytes(c if c in _WORD_CHARS else 32 for c in range(256))
_LEAD, _TRAIL = repeat("'.-"), repeat("$'.-")
_STOP = frozenset(
    [
        "the",
        "a",
        "an",
        "and",
        "or",
        "but",
        "if",
        "then",
        "so",
        "of",
        "to",
        "in",
        "on",
        "at",
        "for",
        "with",
        "from",
        "by",
        "as",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "it",
        "its",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "i",
        "me",
        "my",
        "we",
        "us",
        "our",
        "you",
        "your",
        "he",
        "she",
        "they",
        "them",
        "their",
        "his",
        "her",
        "do",
        "does",
        "did",
        "done",
        "have",
        "has",
        "had",
        "not",
        "no",
        "yes",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "just",
        "also",
        "very",
        "really",
        "about",
        "into",
        "out",
        "up",
        "down",
        "over",
        "than",
        "too",
        "any",
        "some",
        "all",
        "more",
        "most",
        "much",
        "many",
        "such",
        "only",
        "own",
        "same",
        "other",
        "again",
        "further",
        "once",
        "hi",
        "hello",
        "thanks",
        "thank",
        "please",
        "okay",
        "ok",
        "sure",
    ]
)


# Stop words, and the one-character words and empty strings a trimmed run can leave.
_REJECT = _STOP | frozenset("abcdefghijklmnopqrstuvwxyz0123456789") | {""}


def terms(text: str) -> list[str]:
    """Lower-cased words without stop words (numbers kept: they are often the point)."""
    return list(_terms(text))


@functools.lru_cache(maxsize=16_384)
def _terms(text: str) -> tuple[str, ...]:
    # Memoized: a turn's text is scored again on every later compaction of the same conversation.
    low = fold(text)
    if low is None:
        return tuple(w for w in _WORD.findall(text.lower()) if w not in _STOP and len(w) > 1)
    # ``_WORD`` in C loops: a word is a run of [a-z0-9$'.-] trimmed to begin with [a-z0-9$] and end with
    # [a-z0-9] (the regex's greedy match in such a run); other characters, non-ASCII ones too, separate words.
    runs = low.encode("ascii", "replace").translate(_SEPARATORS).decode("ascii").split()
    return tuple(filterfalse(_REJECT.__contains__, map(str.rstrip, map(str.lstrip, runs, _LEAD), _TRAIL)))


class Scorer(Protocol):
    """Scores each document against a query; higher is more relevant. Must be deterministic."""

    def scores(self, query: str, documents: Sequence[str]) -> list[float]: ...


class Bm25Scorer:
    """Okapi BM25 (k1 = 1.2, b = 0.75) with the documents as their own corpus."""

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b

    def scores(self, query: str, documents: Sequence[str]) -> list[float]:
        docs = [_counts(d) for d in documents]
        if not docs:
            return []
        lengths = [sum(d.values()) for d in docs]
        average = (sum(lengths) / len(docs)) or 1.0
        query_terms = sorted(set(_terms(query)))
        df = dict.fromkeys(query_terms, 0)
        for doc in docs:
            for term in doc.keys() & df.keys():
                df[term] += 1
        query_terms = [t for t in query_terms if df[t]]
        n = len(docs)
        out: list[float] = []
        for doc, length in zip(docs, lengths, strict=True):
            score = 0.0
            for term in query_terms:
                tf = doc.get(term, 0)
                if not tf:
                    continue
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                score += idf * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * length / average))
            out.append(score)
        return out


@functools.lru_cache(maxsize=16_384)
def _counts(text: str) -> Counter[str]:
    return Counter(_terms(text))


def select_relevant(
    scorer: Scorer, query: str, documents: Sequence[str], *, max_items: int, min_score: float
) -> list[int]:
    """Indexes of at most ``max_items`` documents scoring at least ``min_score``, best first, ties by index."""
    if max_items <= 0 or not documents or not query.strip():
        return []
    scored = scorer.scores(query, documents)
    ranked = sorted((i for i, s in enumerate(scored) if s >= min_score), key=lambda i: (-scored[i], i))
    return ranked[:max_items]
