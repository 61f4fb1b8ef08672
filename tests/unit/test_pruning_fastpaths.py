"""The pruner's fast paths give exactly what the plain regular expressions give (so pruned bytes never change).

``facts`` matches its word lists on lower-cased text with patterns the regex engine can skip through, and
``relevance`` tokenizes lower-cased text without ``re.IGNORECASE``; both fall back to the case-insensitive
patterns on the few characters that fold differently. The references here are the original, slow forms.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clawback.pipeline.pruning import facts, relevance
from clawback.pipeline.pruning.conversation import fold, message_text, split_turns

_ODD = ["\u0130", "\u0131", "\u017f", "\u212a"]  # dotted I, dotless i, long s, Kelvin sign
_PIECES = [
    *facts._MONTHS.split("|"),
    "i", "we", "my", "our", "us", "me",
    *facts._COMMITMENT_WORDS.split("|"),
    *facts._RECAP_WORDS.split("|"), "Noted:", " it is.", "So ", "Victor", "also",
    "thank you", "that's really useful", "can", "could we",
    "need", "pre-approved", "preapproval", "relocating", "allergic", "bedrooms", "bathroom", "sqft", "sq ft",
    "sq\tft", "square feet", "acres", "neighbourhood", "neighborhood", "switching", "pets", "pet", "don't",
    "can't", "won't", "close to", "have to", "down payment", "Riverside", "Pets:", "$450k", "3", "@x", "www.x",
    "https://x", "next  week", "xmay", "mayx", "may_", "\u017funday", "booKed", "é", "the", "I", "WE'LL",
    *_ODD, "Ok", "thanks", "?", "!", ".", ",", "-", "'", "_", "\n", " ", "  ", "\u00a0", "\u2003", "\x1c",
    # the assistant's trigger words as the words-only bytes see them, and openers after long whitespace
    "set-up", "i-ll", "we'll", "bookedé", "ébooked", "so", "So,", "        ", "\t", "it is", "it is  \n", "it is!",
    "got it", "noted", "renoted", "sent", "present", "will  call", "will email",
]  # fmt: skip
_SPACE = re.compile(r"\s+")
texts = st.lists(st.sampled_from(_PIECES), max_size=14).map("".join)
cased = st.tuples(texts, st.sampled_from(["same", "upper", "capitalize"])).map(
    lambda pair: pair[0] if pair[1] == "same" else getattr(pair[0], pair[1])()
)


def _user_fact(sentence: str) -> bool:
    if facts._FILLER.match(sentence) or facts._COURTESY.match(sentence):
        return False
    if not sentence.endswith("?") or facts._NUMBER.search(sentence) or facts._CONTACT.search(sentence):
        return True
    return facts._REQUEST.match(sentence) is not None


def _assistant_fact(sentence: str, agreed: bool) -> bool:
    if (facts._NUMBER.search(sentence) or facts._TIME.slow.search(sentence)) and facts._COMMITMENT.slow.search(
        sentence
    ):
        return True
    opener = facts._RECAP_START.match(sentence)
    if not sentence.endswith("?") and (opener or facts._RECAP_INSIDE.search(sentence)):
        rest = sentence[opener.end() :] if opener else sentence
        return not facts._COURTESY.match(rest) and (_specific(rest) or len(rest.split()) >= 4)
    return agreed and _specific(sentence)


def _specific(text: str) -> bool:
    found = facts._NUMBER.search(text) or facts._CONTACT.search(text) or facts._TIME.slow.search(text)
    return bool(found or facts._PROPER.search(text))


def _reference_facts(role: str, text: str, agreed: bool) -> tuple[str, ...]:
    found: list[str] = []
    for sentence in facts.sentences(text):
        if _user_fact(sentence) if role == "user" else _assistant_fact(sentence, agreed):
            if len(sentence) > facts._MAX_SENTENCE_CHARS:
                sentence = sentence[: facts._MAX_SENTENCE_CHARS] + "…"
            found.append(_SPACE.sub(" ", sentence))
    return tuple(found)


@settings(max_examples=1500, deadline=None)
@given(cased)
def test_fast_word_patterns_match_the_case_insensitive_ones(text: str) -> None:
    low = fold(text)
    for words in (facts._TIME, facts._COMMITMENT):
        assert words.search(text, low) == (words.slow.search(text) is not None), (words.slow.pattern, text)


_CUE_TEXTS = st.lists(st.sampled_from([*facts._CORRECTION_CUE_LITERALS, *_PIECES]), max_size=8).map("".join)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(cased, _CUE_TEXTS))
def test_the_fast_correction_cue_is_the_plain_one(text: str) -> None:
    low = text.lower()
    assert (facts._CORRECTION_CUE_FAST.search(low) is None) == (facts._CORRECTION_CUE.search(low) is None), text


@settings(max_examples=1500, deadline=None)
@given(cased, st.sampled_from(["user", "assistant"]), st.booleans())
def test_fact_extraction_is_the_plain_regex_one(text: str, role: str, agreed: bool) -> None:
    assert facts._text_facts.__wrapped__(role, text, agreed) == _reference_facts(role, text, agreed)


_WORD = re.compile(r"[a-z0-9$][a-z0-9$'.-]*[a-z0-9]|[a-z0-9]", re.IGNORECASE)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from([*"abcXYZ09$'.- \n_é", *_ODD, "the", "I"]), max_size=30).map("".join))
def test_relevance_terms_are_the_plain_regex_ones(text: str) -> None:
    expected = tuple(w for w in _WORD.findall(text.lower()) if w not in relevance._STOP and len(w) > 1)
    assert relevance._terms.__wrapped__(text) == expected


_DOCUMENT_PIECES = [*"abXY09$'.- \n_é", *_ODD, "the", "ab", "ab.", "'ab", "-ab-", "a-b", "$9k", "pre-approved"]
documents = st.lists(st.lists(st.sampled_from(_DOCUMENT_PIECES), max_size=12).map("".join), min_size=1, max_size=5)


@settings(max_examples=1500, deadline=None)
@given(documents)
def test_bm25_counts_the_query_terms_as_the_tokenizer_does(docs: list[str]) -> None:
    corpus, starts = relevance._corpus(docs)
    for term in {t for d in docs for t in relevance.terms(d)} | {"ab", "a-b", "$9k", "pre-approved"}:
        per_document = [relevance.terms(d).count(term) for d in docs]
        expected = {i: n for i, n in enumerate(per_document) if n}
        assert relevance._frequencies(corpus, starts, term) == expected, (docs, term)


_BLOCKS = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.sampled_from(["", "hi", "a\nb", None, 7])}),
    st.fixed_dictionaries({"type": st.just("tool_result"), "tool_use_id": st.just("t"), "content": st.just("out")}),
    st.fixed_dictionaries(
        {"type": st.just("tool_use"), "id": st.just("t"), "name": st.just("f"), "input": st.just({})}
    ),
    st.fixed_dictionaries({"type": st.just("thinking"), "thinking": st.just("hmm")}),
    st.sampled_from(["not a block", None]),
)
_MESSAGES = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "other"]),
            "content": st.one_of(st.sampled_from(["", "plain", None, 3]), st.lists(_BLOCKS, max_size=4)),
        }
    ),
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"])}),
    st.sampled_from(["not a message", None]),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(_MESSAGES, max_size=8), st.sampled_from([1.0, 1.35]))
def test_split_turns_collects_the_message_texts_and_the_same_turns(messages: list[Any], factor: float) -> None:
    texts: list[tuple[Any, str] | None] = []
    assert split_turns(messages, factor, texts) == split_turns(messages, factor)
    expected = [(m.get("role"), message_text(m)) if isinstance(m, dict) else None for m in messages]
    assert texts == expected


_LOG_PIECES = ["FAILED", "FAIL", "ERROR", "Error", "error:", "Traceback", "\u00d7", "PASSED", "ok", "tests/a.py::t",
               " ", "\n", "\n\n", "x"]  # fmt: skip


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_LOG_PIECES), max_size=40).map("".join))
def test_failure_lines_are_the_plain_line_scan(text: str) -> None:
    lines = text.split("\n")
    first: dict[str, int] = {}  # failure line -> the index of its first occurrence
    for index, line in enumerate(lines):
        if any(mark in line for mark in facts._FAILURE_MARKS):
            first.setdefault(" ".join(line.strip().split()), index)
    expected: list[str] = []
    for line, index in list(first.items())[: facts._MAX_FAILURE_LINES]:
        expected.append(line)
        if index + 1 < len(lines):
            detail = " ".join(lines[index + 1].strip().split())
            if detail and detail not in expected and not any(mark in detail for mark in facts._FAILURE_MARKS):
                expected.append(detail)
    assert facts.failure_lines.__wrapped__(text) == tuple(expected)
