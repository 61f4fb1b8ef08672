"""Relevance: which older turns matter to what the user is asking now (lexical BM25 scoring).

Lexical scoring is the default because it is fast (well under a millisecond for a hundred turns), needs no
model weights and is deterministic across machines, which the cache-stable pruning relies on. An embedding
scorer can be plugged in through ``Scorer``; it must be deterministic too.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from itertools import filterfalse, repeat
from typing import Any, Protocol

from clawback.pipeline.pruning.conversation import fold, is_turn_start, message_text

__all__ = ["Bm25Scorer", "Scorer", "needed_terms_lost", "select_relevant", "terms"]

_WORD = re.compile(r"[a-z0-9$][a-z0-9$'.-]*[a-z0-9]|[a-z0-9]", re.IGNORECASE)
_WORD_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789$'.-")
_SEPARATORS = bytes(c if c in _WORD_CHARS else 32 for c in range(256))
_LEAD_TRIM, _TRAIL_TRIM = "'.-", "$'.-"  # what ``terms`` strips off the start and the end of a word
_LEAD, _TRAIL = repeat(_LEAD_TRIM), repeat(_TRAIL_TRIM)
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
    """Okapi BM25 (k1 = 1.2, b = 0.75) with the documents as their own corpus.

    Only the query's terms are counted. The documents are lower-cased and joined into one string whose
    non-word characters are spaces (C-level passes), each query term is looked up in it with ``str.find``,
    and an occurrence counts when it is a whole word as ``terms`` trims words (only ``'.-`` between it and
    the space before, only ``$'.-`` between it and the space after). That gives exactly the frequencies a
    ``Counter`` of each document's terms gives, at a fraction of the cost on a hundred-turn history never
    seen before (the gateway's first request after a restart, or a replica's first of a conversation). The
    document length BM25 normalizes by is measured in characters rather than terms: it enters only as a
    ratio to the average length, for which the two are proportional.
    """

    def __init__(self, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1 = k1
        self.b = b

    def scores(self, query: str, documents: Sequence[str]) -> list[float]:
        if not documents:
            return []
        return list(_bm25_scores(query, tuple(documents), self.k1, self.b))


@functools.lru_cache(maxsize=128)
def _bm25_scores(query: str, documents: tuple[str, ...], k1: float, b: float) -> tuple[float, ...]:
    """``Bm25Scorer.scores``, memoized: relevance is chosen at the compaction point in force, whose query and
    older turns stay the same on every request until the next point, so a conversation's later requests (and
    the default shadow's, which plans every request) score once per point, not once per request. Bounded: an
    entry holds the texts of one conversation's older turns."""
    corpus, starts = _corpus(documents)
    n = len(documents)
    lengths = [end - start for start, end in itertools.pairwise(starts)]
    average = (sum(lengths) / n) or 1.0
    norms = [k1 * (1 - b + b * length / average) for length in lengths]
    out = [0.0] * n
    for term in sorted(set(_terms(query))):  # sorted: the float sums come out the same on every run
        frequencies = _frequencies(corpus, starts, term)
        if not frequencies:
            continue
        df = len(frequencies)
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for doc, tf in frequencies.items():
            out[doc] += idf * tf * (k1 + 1) / (tf + norms[doc])
    return tuple(out)


def _corpus(documents: Sequence[str]) -> tuple[str, list[int]]:
    """The documents lower-cased, non-word characters as spaces, one space after each; and where each
    begins (plus the end), so that an offset maps back to its document."""
    folded = [fold(text) for text in documents]
    starts = [0]
    lows = [low for low in folded if low is not None]
    if len(lows) == len(folded):  # the common case: one translation pass over all of them
        for low in lows:
            starts.append(starts[-1] + len(low) + 1)
        # ``encode(..., "replace")`` gives one byte per character, so the offsets hold in the translated string.
        return _words_only(" ".join(lows) + " "), starts
    pieces: list[str] = []
    for text, folded_text in zip(documents, folded, strict=True):
        # The rare text that needs the case-insensitive tokenizer is stood for by its terms, verbatim.
        piece = (" ".join(_terms(text)) if folded_text is None else _words_only(folded_text)) + " "
        pieces.append(piece)
        starts.append(starts[-1] + len(piece))
    return "".join(pieces), starts


def _words_only(low: str) -> str:
    return low.encode("ascii", "replace").translate(_SEPARATORS).decode("ascii")


def _frequencies(corpus: str, starts: list[int], term: str) -> Counter[int]:
    """How often ``term`` occurs as a whole, trimmed word in each document of ``corpus`` that has it."""
    found: list[int] = []
    size = len(term)
    find, document = corpus.find, bisect.bisect_right
    at = find(term)
    while at >= 0:
        after = at + size
        if corpus[after] == " " and (at == 0 or corpus[at - 1] == " "):  # a bare word: the common case
            found.append(document(starts, at) - 1)
            at = find(term, after)
            continue
        before = at - 1
        while before >= 0 and corpus[before] in _LEAD_TRIM:
            before -= 1
        while corpus[after] in _TRAIL_TRIM:  # the corpus ends with a space
            after += 1
        if (before < 0 or corpus[before] == " ") and corpus[after] == " ":
            found.append(bisect.bisect_right(starts, at) - 1)
        at = corpus.find(term, after)
    return Counter(found)


def select_relevant(
    scorer: Scorer, query: str, documents: Sequence[str], *, max_items: int, min_score: float
) -> list[int]:
    """Indexes of at most ``max_items`` documents scoring at least ``min_score``, best first, ties by index."""
    if max_items <= 0 or not documents or not query.strip():
        return []
    scored = scorer.scores(query, documents)
    ranked = sorted((i for i, s in enumerate(scored) if s >= min_score), key=lambda i: (-scored[i], i))
    return ranked[:max_items]


def needed_terms_lost(original: Mapping[str, Any], pruned: Mapping[str, Any]) -> set[str]:
    """The needed-fact heuristic: the terms of the user's latest message that the original request's history
    holds and the pruned one's no longer does (in no kept turn, no memory line, no placeholder).

    Non-empty, the message seems to refer to something pruning dropped: the fact the answer needs may be gone.
    Shadow mode records how often this fires (``pruning_needed_terms_lost``) before anyone switches pruning on;
    the pruner itself never reads it (its decisions stay the same whatever the user asks, for the cache)."""
    before, after = original.get("messages"), pruned.get("messages")
    if not isinstance(before, list) or not isinstance(after, list):
        return set()
    query = _latest_human(before)
    if query is None:
        return set()
    wanted = set(_terms(message_text(before[query])))
    if not wanted:
        return set()
    kept = _terms_of(after, wanted, _latest_human(after))
    return _terms_of(before, wanted, query) - kept


def _latest_human(messages: Sequence[Any]) -> int | None:
    return next(
        (i for i in range(len(messages) - 1, -1, -1) if isinstance(messages[i], dict) and is_turn_start(messages[i])),
        None,
    )


def _terms_of(messages: Sequence[Any], wanted: set[str], skip: int | None) -> set[str]:
    """The terms of ``wanted`` that the messages but ``messages[skip]`` (the user's message itself) hold."""
    found: set[str] = set()
    for index, message in enumerate(messages):
        if index != skip and isinstance(message, dict):
            found.update(wanted.intersection(_terms(message_text(message, include_tool_results=True))))
    return found
