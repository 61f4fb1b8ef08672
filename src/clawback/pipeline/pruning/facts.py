"""Fact memory: what the dropped turns said that a later answer may need, distilled extractively.

The pruner never sees a workload's labels; it finds facts the way they show up in real traffic. What the user said
is kept: every sentence of theirs, verbatim (numbers, names and negations survive exactly), but small talk and
thanks (``ok``, ``thanks, that's helpful``) and questions for information ("what's the HOA?", "should we get a
lender letter?"; a request, "can we pay the deposit in two parts?", is kept: it says what they want). Users do not
write in the shapes a rule expects ("No car. He bikes.", "longfellow, seward, maybe prospect park."): an earlier
version kept only the sentences with a number, a name or a signal word, and lost one fact in six on conversations
written by someone who had never seen those words. Of the assistant's sentences, those that record what was agreed
are kept: a commitment with specifics (a booked time, a quoted figure); a recap ("So Thursday at 5:30pm with
Victor.", "Noted: garage required, detached OK."); and, when the user's next message agrees ("yes!", "sounds
good"), every sentence of the proposal that holds a specific (a number, a time, a name, an address). The
assistant's explanations can be regenerated; what the user accepted cannot. Duplicates are dropped (first
occurrence wins).

A correction replaces the value it corrects. When a user message that says so ("actually", "sorry", "I need to
fix", "instead of") negates a value ("under 560, not 575", "can we do 1 instead of 12"), or gives a phone
number or an e-mail address again, the earlier memory lines' occurrences of the old value are replaced by a
note of where it was corrected (``render_memory``'s ``corrections``), so that the memory never presents it as
current; the correcting sentence stays.

An agent's turn (one whose tool calls were answered: a coding agent's, say) is read differently. The human
message that opened it is an instruction, and an instruction is kept whole: "Use the logger in storage.py
instead of print statements." holds no number or first-person signal, yet dropping it changes the work.
Tool outputs are not read for sentences (they are code, listings, logs), but the lines that report a failure
(a test marked ``FAILED`` / ``FAIL`` / a cross mark, an ``ERROR`` / ``Error`` / ``error:`` / ``fatal:`` line, a
``Traceback``), each with the line after it (its detail), are kept, the first five a turn: the
failing test is what the agent is fixing long after the run that showed it has been compacted away. So are
the files the turn's tool calls edited (a ``tool_use`` whose name says it writes: ``edit``, ``write``,
``replace``, ``patch``, ``create``, ``apply``, ``str_replace``; its ``path`` / ``file_path`` input), the newest
last: "the last edited file" is what the agent's next step usually continues.

The result is a compact block grouped by turn, e.g. ``t3 user: We're pre-approved for $450k.``; it is a
pure function of the history it is given, so the same history always yields the same bytes.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress, repeat
from typing import Any

from clawback.pipeline.pruning.conversation import block_text, fold, message_text

__all__ = [
    "MEMORY_TAG",
    "extract_facts",
    "facts_of_texts",
    "facts_of_turn",
    "failure_lines",
    "render_memory",
    "sentences",
]

MEMORY_TAG = "<conversation-memory"  # how the memory block's text begins (the eval finds it so)
# A period ends a sentence only before a space or the end: "$1.2M", "storage.py", "a.b@x.com" stay whole.
_SENTENCE_OPENS, _SENTENCE_RUN = r"(?=[^.!?\n]|\.\w)", r"[^.!?\n]*(?:\.(?=\w)[^.!?\n]*)*(?:[.!?]+|\n|$)"  # unrolled
_SENTENCE = re.compile(_SENTENCE_OPENS + _SENTENCE_RUN)
_NUMBER = re.compile(r"\d")
_ASCII_DIGIT = re.compile("[0-9]")  # ``_NUMBER`` on ASCII text (a third of its cost: no Unicode category look-up)
_CONTACT = re.compile(r"@\w|https?://|www\.|\+?\d[\d\s().-]{7,}\d")
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    "tomorrow|tonight|weekend|next week|next month|next year|spring|summer|fall|autumn|winter"
)
_COMMITMENT_WORDS = r"scheduled|booked|confirmed|reserved|sent|set up|quoted|will call|will email|i'll|we'll"
_RECAP_WORDS = r"so|noted|got it|to confirm|just to confirm|confirming|to recap|i'll note|i've noted|noting|understood"
_RECAP_START = re.compile(rf"^(?:{_RECAP_WORDS})\b[\s:,-]*(?=\S)", re.IGNORECASE)
_RECAP_INSIDE = re.compile(r"\bnoted\b|\bit is[.!]*$", re.IGNORECASE)
# ``_RECAP_INSIDE`` on ``fold``-ed text: the first letters let the engine skip the other positions in C.
_RECAP_INSIDE_LOW = re.compile(r"n(?<!\w.)oted\b|i(?<!\w.)t is[.!]*$")
_COURTESY_ATOM = (
    r"(?:thanks?|thank you|so much|very much|that's (?:really |very |so )?(?:useful|helpful|great|good|clear|fine)|"
    r"great|perfect|good|of course|will do|sure|ok(?:ay)?|lovely|wonderful|(?:that )?makes sense|understood)"
)
_COURTESY = re.compile(rf"^\W*{_COURTESY_ATOM}(?:[\s,!.]+{_COURTESY_ATOM})*[\s!.,]*$", re.IGNORECASE)
_REQUEST = re.compile(
    r"^\W*(?:\w+[,:]\s+)?(?:can|could|may|would|will|is it ok(?:ay)? if|would it be ok(?:ay)? if)\s+"
    r"(?:i|we|my|our|us|me)\b",
    re.IGNORECASE,
)
_AGREES = re.compile(
    r"^\W*(?:yes|yep|yeah|yup|ya|sure|ok(?:ay)?|perfect|great|grand|lovely|brilliant|excellent|sounds (?:good|great|"
    r"perfect)|that works|works for|works!|deal|correct|right|exactly|confirmed|absolutely|definitely|do it|book it|"
    r"let's do)",
    re.IGNORECASE,
)
_PROPER = re.compile(r"(?<=[\w,;:] )[A-Z][a-z]+")
_FILLER = re.compile(
    r"^(?:ok(?:ay)?|thanks?(?: you)?|thank you|great|cool|sure|yes|yeah|yep|no|nope|sounds good|perfect|"
    r"got it|hi|hello|hey|awesome|nice)\b[\s!.,]*$",
    re.IGNORECASE,
)
# ``_is_user_fact`` in one pattern (a zero-width match), on the ``fold`` of a sentence without a contact (no "@",
# "//", "www."), case-sensitive as the word patterns of ``_Words`` (their IGNORECASE forms cost several times
# more): not small talk, and no question (no "?" at the end), or one with a digit, or a request. Possessive
# repeats, so that a sentence is read once, without backtracking.
_USER_FACT_LOW = re.compile(
    rf"(?!{_FILLER.pattern}|{_COURTESY.pattern})"
    rf"(?:(?=(?:[^?]++|\?(?!\Z))*+\Z)|(?=\D*+\d)|(?={_REQUEST.pattern}))"
)
_MAX_SENTENCE_CHARS = 400
_FAILURE_MARKS = (
    "FAIL", "ERROR", "Error", "error:", "fatal:", "FATAL", "panic:", "Traceback",
    "\u00d7", "\u2715", "\u2717",  # the cross marks of vitest / jest / mocha
)  # fmt: skip
# Each mark with a character it holds (its first when upper-case, else its last): where that character is
# absent (one ``memchr`` pass, a tenth of a substring search's cost) the mark is too, and its search is skipped.
_FAILURE_KEYS = tuple((mark, mark[0] if not mark[0].islower() else mark[-1]) for mark in _FAILURE_MARKS)
_MAX_FAILURE_LINES = 5
_WRITE_TOOL_WORDS = ("edit", "write", "replace", "patch", "create", "apply", "insert", "multiedit")
_PATH_KEYS = ("path", "file_path", "filename", "file", "target_file")
_MAX_EDITED_FILES = 3
_CODE_KEYS = ("new_str", "new_string", "content", "file_text", "code", "patch", "diff")
_DEFINITION = re.compile(r"^[ \t+]*(?:async\s+)?(?:def|class|function|func|fn)\s+(\w+)", re.MULTILINE)
_MAX_DEFINITIONS = 3
_CORRECTION_CUE_LITERALS = (
    "actual", "correct", "mistake", "mistaken", "sorry", "wait", "fix", "instead", "chang", "updat", "meant",
    "misread", "wrong", "typo", "swapped",
)  # fmt: skip
_CORRECTION_CUE = re.compile(rf"\b(?:{'|'.join(_CORRECTION_CUE_LITERALS)})")
_WEEKDAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_MONTH_NAMES = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
)
_VALUE = (
    rf"(?:(?:{_MONTH_NAMES})\.?\s+\d{{1,2}}(?:st|nd|rd|th)?|\d{{1,2}}(?:st|nd|rd|th)?\s+of\s+(?:{_MONTH_NAMES})"
    rf"|\$?\d[\d,.:]*\d(?:\s?(?:k|m|am|pm)\b)?|\$?\d(?:\s?(?:k|m|am|pm)\b)?|(?:{_WEEKDAYS}))"
)
_NEGATED = re.compile(rf"\b(?:not|instead of|rather than|no longer)\s+(?:the\s+|on\s+|at\s+|by\s+)?({_VALUE})(?!\w)")
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d\s().-]{5,}\d(?![\w])")  # and 7 digits or more: ``_phones``
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")


class _Words:
    r"""``\b(?:alternatives)\b``, case-insensitive, and an equivalent that is ~7x faster on lower-cased text.

    The slow form, on text with mixed case, makes the regex engine try every alternative at every position. The
    fast one groups the alternatives by first letter (each must begin with a lower-case letter) and checks the
    leading word boundary after that letter (``(?<!\w.)``), so that the engine's first-character set skips most
    positions in C. ``search(text, low)`` gives the same answer as the slow form on ``text`` whenever ``low`` is
    ``fold(text)``; the unit tests check the two against each other.
    """

    __slots__ = ("fast", "slow")

    def __init__(self, alternatives: str, end: str = r"\b") -> None:
        self.slow = re.compile(rf"\b(?:{alternatives}){end}", re.IGNORECASE)
        groups: dict[str, list[str]] = {}
        for alternative in alternatives.split("|"):
            groups.setdefault(alternative[0], []).append(alternative[1:])
        parts = [rf"{first}(?<!\w.)(?:{'|'.join(sorted(set(rest)))})" for first, rest in sorted(groups.items())]
        self.fast = re.compile(rf"(?:{'|'.join(parts)}){end}")

    def search(self, text: str, low: str | None) -> bool:
        return (self.fast.search(low) if low is not None else self.slow.search(text)) is not None


_TIME = _Words(_MONTHS)
# ``_CORRECTION_CUE`` (the cues begin words, and may go on: "corrected", "changing") in the form the engine skips
# through (see ``_Words``; on lower-cased text it finds what ``_CORRECTION_CUE`` finds, the unit tests check it)
_CORRECTION_CUE_FAST = _Words("|".join(_CORRECTION_CUE_LITERALS), end="").fast
_COMMITMENT = _Words(_COMMITMENT_WORDS)
_TIME_FAST, _COMMITMENT_FAST = _TIME.fast, _COMMITMENT.fast
# Every commitment or recap phrase holds one of these words or phrases, as a whole word ("so", too common to
# look for inside sentences, counts where a sentence opens with it): an assistant sentence without one is no
# fact unless the user agreed with it.
_TRIGGER_WORDS = f"{_COMMITMENT_WORDS}|noted|got it|confirm|confirming|recap|noting|understood|it is"
# Where they occur, found in C: the text lower-cased and ASCII-encoded (one byte per character), every byte but
# [a-z0-9_] a space, padded with one; each phrase as it reads there between spaces ("i'll" -> b" i ll "). A
# whole-word occurrence in the text is one there (the characters around it are not word characters); the
# converse need not hold ("set-up", "bookedé"): the sentence check is the exact one.
_WORD_BYTES = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789_")
_WORDS_ONLY = bytes(c if c in _WORD_BYTES else 32 for c in range(256))


def _trigger_keys(phrases: str) -> dict[bytes, tuple[bytes, ...]]:
    """For each phrase its longest word as ``_WORDS_ONLY`` leaves it (the rarest, roughly), and the phrases
    holding that word as they read there between spaces (``b"ll"``: ``b" i ll "``, ``b" we ll "``)."""
    keys: dict[bytes, dict[bytes, None]] = {}
    for phrase in phrases.split("|"):
        words = phrase.encode().translate(_WORDS_ONLY).split()
        longest = max(reversed(words), key=len)
        keys.setdefault(longest, {})[b" " + b" ".join(words) + b" "] = None
    return {word: tuple(found) for word, found in keys.items()}


def _between_spaces(phrases: Iterable[bytes]) -> re.Pattern[bytes]:
    """Each of ``phrases`` (as ``_WORDS_ONLY`` leaves them, words between single spaces) where it stands between
    spaces, as the match of the space before it: grouped by first letter, so that the engine jumps from space to
    space in C and tries one group at each."""
    groups: dict[bytes, list[bytes]] = {}
    for phrase in sorted(set(phrases)):
        groups.setdefault(phrase[:1], []).append(re.escape(phrase[1:]))
    return re.compile(
        b" (?:" + b"|".join(f + b"(?:" + b"|".join(rest) + b")" for f, rest in groups.items()) + b")(?= )"
    )


_TRIGGER_KEYS = _trigger_keys(_TRIGGER_WORDS)
_TRIGGERS = _between_spaces([p.strip() for found in _TRIGGER_KEYS.values() for p in found] + [b"so"])
# a word of each ``_TIME`` phrase: a text where none stands between spaces has no ``_TIME`` word
_TIME_KEYS = _between_spaces(_trigger_keys(_MONTHS))


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def _has_contact(sentence: str) -> bool:
    # Only reached without a digit in the sentence: then only "@x", "http(s)://" and "www." can match.
    return ("@" in sentence or "//" in sentence or "www." in sentence) and _CONTACT.search(sentence) is not None


def _is_user_fact(sentence: str) -> bool:
    """What the user said, but small talk and questions that state nothing about them (see the module doc)."""
    if _FILLER.match(sentence) or _COURTESY.match(sentence):
        return False
    if not sentence.endswith("?") or _NUMBER.search(sentence) or _has_contact(sentence):
        return True
    # a request states a wish ("can we pay the deposit in two parts?"); a question for information does not
    return _REQUEST.match(sentence) is not None


def _has_specific(sentence: str, low: str | None) -> bool:
    """A number, a contact, a date or time word, or a name (a capitalized word after the first)."""
    return bool(
        _NUMBER.search(sentence) or _has_contact(sentence) or _TIME.search(sentence, low) or _PROPER.search(sentence)
    )


def _is_assistant_fact(sentence: str, agreed: bool = False) -> bool:
    """A commitment with specifics, a recap, or (``agreed``: the user's next message agrees) a specific."""
    low = fold(sentence)
    if low is not None:
        return _is_assistant_fact_low(sentence, low, agreed)
    if _COMMITMENT.slow.search(sentence) and bool(_NUMBER.search(sentence) or _TIME.slow.search(sentence)):
        return True
    if not sentence.endswith("?"):
        opener = _RECAP_START.match(sentence)
        if opener or _RECAP_INSIDE.search(sentence):
            return _records(sentence[opener.end() :] if opener else sentence, low)
    return agreed and _has_specific(sentence, low)


def _is_assistant_fact_low(sentence: str, low: str, agreed: bool, timely: bool = True, inside: bool = True) -> bool:
    """``_is_assistant_fact`` of a sentence whose ``fold`` is ``low`` (not ``None``): the fast patterns called
    directly, the step a long history repeats for every sentence that holds a trigger word. ``timely`` /
    ``inside`` false: the text the sentence is from holds no word of ``_TIME`` / no "noted" or "it is" (the
    patterns would not match: skipped)."""
    if _COMMITMENT_FAST.search(low) and (
        (_ASCII_DIGIT if sentence.isascii() else _NUMBER).search(sentence) or (timely and _TIME_FAST.search(low))
    ):
        return True  # the commitment first: the rarer of the two conditions
    if sentence[-1:] != "?":
        opener = _RECAP_START.match(sentence)
        if opener or (inside and _RECAP_INSIDE_LOW.search(low)):
            return _records(sentence[opener.end() :] if opener else sentence, low)
    return agreed and _has_specific(sentence, low)


def _records(rest: str, low: str | None) -> bool:
    """Whether what a recap says after its opener records something: not a courtesy ("Noted, thank you.",
    "Got it, that's really useful."), and a specific or four words or more."""
    if _COURTESY.match(rest):
        return False
    return _has_specific(rest, None if low is None else fold(rest)) or len(rest.split()) >= 4


@functools.lru_cache(maxsize=16_384)
def agrees(text: str) -> bool:
    """Whether a user message opens by agreeing ("yes!", "sounds good", "perfect, book it"). Memoized like
    ``_text_facts``: every request of a conversation asks it again of each earlier user message."""
    return _AGREES.match(text) is not None


@functools.lru_cache(maxsize=65_536)
def _text_facts(role: str, text: str, agreed: bool = False) -> tuple[str, ...]:
    """The fact sentences of one message text (``agreed``: an assistant message the user's next one agrees
    with). Memoized: the gateway sees the same history on every turn, so each message is read once, not once
    per turn (the 100-turn benchmark relies on it).

    Unless agreed with, an assistant fact needs a commitment or recap phrase, so only the sentences where one
    occurs are examined (found by one pattern over the text's words, and one pass of the sentence pattern): long
    explanations cost a few C-level passes, not a regex check per sentence.
    """
    if role == "user":
        return _user_facts(text)
    low = fold(text)
    if low is None:  # the rare text the fast patterns do not fit: every sentence, checked exactly
        return tuple(_clip(s) for s in sentences(text) if _is_assistant_fact(s, agreed))
    found: list[str] = []
    if agreed:
        for match in _SENTENCE.finditer(low):
            begin, end = match.span()
            sentence = text[begin:end].strip()
            if sentence and _is_assistant_fact_low(sentence, low[begin:end].strip(), True):
                found.append(_clip(sentence))
        return tuple(found)
    # Only a sentence that holds a trigger or opens with "so" can be a fact. Where the text has one: the text's
    # words (C loops: translate to words-only bytes), each phrase found between spaces by one pattern.
    words = b" " + low.encode("ascii", "replace").translate(_WORDS_ONLY) + b" "
    hits = [(m.start(), m.group() == b" so") for m in _TRIGGERS.finditer(words)]
    if not hits:
        return ()
    # The sentences in one regex pass; each phrase falls in one sentence (it holds no sentence break). ``at`` in
    # ``words`` is the space before the phrase: ``at`` in ``low``. A sentence with "so" counts where it opens
    # with it (after spaces); a phrase inside a longer match ("got it is") is in the sentence of the match.
    matches = list(_SENTENCE.finditer(low))
    begins = list(map(re.Match.start, matches))
    chosen: dict[int, None] = {}
    for at, so in hits:
        index = bisect.bisect_right(begins, at) - 1
        if not so or begins[index] == at or low[begins[index] : at].isspace():
            chosen[index] = None
    # Which of the slower patterns can match at all, from the words the text holds (a superset, as above).
    timely = _TIME_KEYS.search(words) is not None
    inside = b" noted " in words or b" it is " in words
    for index in sorted(chosen):
        begin, end = matches[index].span()
        sentence = text[begin:end].strip()  # (``fold`` keeps every offset where it is not ``None``)
        if sentence and _is_assistant_fact_low(sentence, low[begin:end].strip(), False, timely, inside):
            found.append(_clip(sentence))
    return tuple(found)


def _user_facts(text: str) -> tuple[str, ...]:
    """``_text_facts`` of a user message: its sentences but small talk and questions for information. Without a
    ``?`` in the text no sentence is a question, and in a printable text of single spaces no longer than a
    clipped sentence ``_clip`` changes nothing: then the sentences go through C-level filters only."""
    said = list(filter(None, map(str.strip, _SENTENCE.findall(text))))  # ``sentences(text)``
    kept: Iterable[str]
    if "@" in text or "//" in text or "www." in text or fold(text) is None:
        kept = filter(_is_user_fact, said)
    else:  # no contact: ``_USER_FACT_LOW`` on each folded sentence, called from C
        kept = compress(said, map(_USER_FACT_LOW.match, map(str.lower, said)))
    if len(text) <= _MAX_SENTENCE_CHARS and "  " not in text and text.isprintable():
        return tuple(kept)
    return tuple(map(_clip, kept))


def _clip(sentence: str) -> str:
    if len(sentence) > _MAX_SENTENCE_CHARS:
        sentence = sentence[:_MAX_SENTENCE_CHARS] + "…"
    # ``str.split`` splits on the characters ``\s`` matches (``str.isspace``) and the sentence is stripped, so this
    # is ``re.sub(r"\s+", " ", sentence)`` at a third of the cost (the fast-path tests compare the two).
    return " ".join(sentence.split())


@functools.lru_cache(maxsize=16_384)
def failure_lines(text: str) -> tuple[str, ...]:
    """The first ``_MAX_FAILURE_LINES`` distinct lines of a tool output that report a failure, in order, each
    followed by the line after it when that one reports none itself (its detail, a test summary), found
    with ``str.find`` (a 10 kB output costs a few substring searches, not a regex pass). Memoized like
    ``_text_facts``. Each mark's own first five distinct lines are enough: a line among the first five overall
    is among the first five of any mark it holds (the unit tests compare it with a plain line-by-line scan)."""
    found: dict[str, int] = {}  # line -> where it first occurs
    for mark, key in _FAILURE_KEYS:
        if key not in text:
            continue
        mine: set[str] = set()
        at = text.find(mark)
        while at >= 0 and len(mine) < _MAX_FAILURE_LINES:
            start = text.rfind("\n", 0, at) + 1
            end = text.find("\n", at)
            line = _clip(text[start : end if end >= 0 else len(text)].strip())
            mine.add(line)
            if line not in found or found[line] > start:
                found[line] = start
            at = text.find(mark, end) if end >= 0 else -1
    first = sorted(found, key=found.__getitem__)[:_MAX_FAILURE_LINES]
    out: list[str] = []
    for line in first:  # each with the line after it, its detail ("pg_dump: detail: server version: 16.2")
        out.append(line)
        start = found[line]
        end = text.find("\n", start)
        if end >= 0:
            stop = text.find("\n", end + 1)
            detail = _clip(text[end + 1 : stop if stop >= 0 else len(text)].strip())
            if detail and detail not in out and not any(mark in detail for mark in _FAILURE_MARKS):
                out.append(detail)
    return tuple(out)


def _edited_path(block: Mapping[str, Any]) -> str | None:
    """The file a ``tool_use`` block writes, when its name says it writes and its input names one, with the
    functions and classes the written code defines (the test the agent just wrote, the helper it added)."""
    name = block.get("name")
    tool_input = block.get("input")
    if not isinstance(name, str) or not isinstance(tool_input, dict):
        return None
    low = name.lower()
    if not any(word in low for word in _WRITE_TOOL_WORDS):
        return None
    for key in _PATH_KEYS:
        path = tool_input.get(key)
        if isinstance(path, str) and path.strip():
            names: dict[str, None] = {}
            for key in _CODE_KEYS:
                code = tool_input.get(key)
                if isinstance(code, str):
                    names.update(dict.fromkeys(_DEFINITION.findall(code)))
            defined = list(names)[:_MAX_DEFINITIONS]
            return _clip(path.strip()) + (f" (defines {', '.join(defined)})" if defined else "")
    return None


def facts_of_turn(
    messages: Sequence[Any], texts: Sequence[tuple[Any, str]], next_user: str | None = None
) -> list[tuple[str, str]]:
    """The facts of one turn: ``messages`` (its messages, in order) and ``texts`` (``(role, message_text)`` of
    its dict messages, as ``split_turns`` collects them); ``next_user``: the text of the message that opens the
    next turn, if any (an assistant proposal it agrees with is kept). An agent's turn (one with ``tool_result``
    blocks) keeps its opening instruction whole, the failure lines of its tool outputs and the files it edited
    (see the module doc)."""
    if len(messages) < 3:  # a tool result needs a human message and a tool call before it
        return facts_of_texts(texts, next_user)
    failures: list[tuple[str, str]] = []
    edited: dict[str, None] = {}  # in order of last edit
    agent = False
    for message in messages[1:]:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        if message.get("role") == "assistant":
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    path = _edited_path(block)
                    if path is not None:
                        edited.pop(path, None)
                        edited[path] = None
            continue
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                agent = True
                if len(failures) < 2 * _MAX_FAILURE_LINES:
                    failures.extend(("tool", line) for line in failure_lines(block_text(block)))
    if not agent or not texts or texts[0][0] != "user" or not texts[0][1].strip():
        return facts_of_texts(texts, next_user)
    instruction = ("user", _clip(texts[0][1].strip()))
    files = [("tool", f"edited {path}") for path in list(edited)[-_MAX_EDITED_FILES:]]  # the newest last
    # the agent's own words between tool calls say what it found and decided ("The fix is to install
    # postgresql-client-16"): short, and not regenerable once the outputs they read are gone
    said = [(role, _clip(text.strip())) if role == "assistant" else (role, text) for role, text in texts[1:]]
    notes = [item for item in said if item[0] == "assistant" and item[1]]
    rest = facts_of_texts([item for item in said if item[0] != "assistant"], next_user)
    return [instruction, *rest, *notes, *failures[: 2 * _MAX_FAILURE_LINES], *files]


def extract_facts(messages: Sequence[Mapping[str, Any]], next_user: str | None = None) -> list[tuple[str, str]]:
    """``(role, sentence)`` for every fact of the turn ``messages``, in order (duplicates kept: ``render_memory``
    drops them across the whole compacted span)."""
    texts = [(message.get("role"), message_text(message)) for message in messages]
    return facts_of_turn(messages, texts, next_user)


def facts_of_texts(texts: Sequence[tuple[Any, str]], next_user: str | None = None) -> list[tuple[str, str]]:
    """``extract_facts`` of messages already reduced to ``(role, message_text)``."""
    found: list[tuple[str, str]] = []
    last = len(texts) - 1
    for i, (role, text) in enumerate(texts):
        # An empty text (a message of tool_result blocks, say) has no facts: no need to look it up.
        if not text:
            continue
        if role == "user":
            found.extend(zip(repeat(role), _text_facts(role, text)))
        elif role == "assistant":
            reply = next_user if i == last else (texts[i + 1][1] if texts[i + 1][0] == "user" else None)
            agreed = reply is not None and agrees(reply)
            found.extend(zip(repeat(role), _text_facts(role, text, agreed)))
    return found


@functools.lru_cache(maxsize=16_384)
def corrected_values(text: str) -> tuple[tuple[str, str], ...]:
    """What a user message corrects: ``("value", old)`` for each value it negates ("560, not 575"), ``("phone",
    new)`` / ``("email", new)`` for a phone number or e-mail address it gives again; only when the message says
    it corrects something ("actually", "sorry", "I need to fix", "instead"). Memoized like ``_text_facts``."""
    low = fold(text)
    if low is None:
        low = text.lower()
    if _CORRECTION_CUE_FAST.search(low) is None:
        return ()
    found: list[tuple[str, str]] = [("value", m.group(1)) for m in _NEGATED.finditer(low)]
    found += [("phone", phone) for phone in _phones(text)]
    found += [("email", m.group()) for m in _EMAIL.finditer(text)]
    return tuple(found)


def _value_pattern(value: str) -> re.Pattern[str]:
    """Whole-word occurrences of a corrected value, with its currency sign and unit ("$575k" for "575")."""
    return re.compile(rf"(?<![\w$.,])\$?{re.escape(value)}(?:\s?(?:k|m|am|pm)\b)?(?![\w,.]\w|\w)", re.IGNORECASE)


def _apply_corrections(text: str, turn: int, corrections: Sequence[tuple[int, str, str]]) -> str:
    """``text`` (a memory line of ``turn``) with the values later corrections replaced (see the module doc)."""
    for at, kind, value in corrections:
        if at <= turn:
            continue
        note = f"[corrected in t{at + 1}]"
        if kind == "value":
            text = _value_pattern(value).sub(note, text)
        else:
            text = _replace_others(_PHONE if kind == "phone" else _EMAIL, text, value, note, kind == "phone")
    return text


def _is_phone(candidate: str) -> bool:
    return sum(c.isdigit() for c in candidate) >= 7


def _phones(text: str) -> list[str]:
    return [m.group().strip() for m in _PHONE.finditer(text) if _is_phone(m.group())]


def _replace_others(pattern: re.Pattern[str], text: str, keep: str, note: str, phone: bool) -> str:
    """``text`` with every match of ``pattern`` but ``keep`` (and, for phones, but non-phone digit runs)
    replaced by ``note``."""

    def swap(match: re.Match[str]) -> str:
        found = match.group().strip()
        if found == keep or (phone and not _is_phone(found)):
            return match.group()
        return note

    return pattern.sub(swap, text)


def render_memory(
    first_turn: int,
    last_turn: int,
    omitted: int,
    facts: Sequence[tuple[int, str, str]],
    summary: str | None = None,
    corrections: Sequence[tuple[int, str, str]] = (),
) -> str:
    """The memory block's text: a header saying what was removed, then one line per fact (first occurrence of
    each sentence wins), or the stored summary when a cheap model wrote one. ``corrections``: ``(turn, kind,
    value)`` as ``corrected_values`` finds them in the history; a line older than a correction has the value
    it corrects replaced by a note of the correcting turn."""
    head = (
        f'{MEMORY_TAG} turns="{first_turn + 1}-{last_turn + 1}" omitted="{omitted}">\n'
        "Earlier turns of this conversation were condensed to save tokens. "
    )
    if summary is not None:
        return head + "Summary of them:\n" + summary.strip() + "\n</conversation-memory>"
    seen: set[str] = set()
    lines: list[str] = []
    last: tuple[int, str] | None = None
    for turn, role, text in facts:
        normal = text.lower()
        if normal in seen:
            continue
        seen.add(normal)
        if corrections:
            text = _apply_corrections(text, turn, corrections)
        if last == (turn, role) and role != "tool":  # one line per turn and speaker: "No car. He bikes."
            lines[-1] += " " + text
        else:
            lines.append(f"- t{turn + 1} {role}: {text}")
        last = (turn, role)
    body = "Statements from them, verbatim:\n" + "\n".join(lines) + "\n" if lines else "No facts were found in them.\n"
    return head + body + "</conversation-memory>"
