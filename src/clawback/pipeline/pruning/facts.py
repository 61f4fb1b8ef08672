"""Fact memory: what the dropped turns said that a later answer may need, distilled extractively.

The pruner never sees a workload's labels; it finds facts the way they show up in real traffic. A sentence
the user wrote is kept (verbatim, so that numbers, names and negations survive exactly) when it carries a
fact signal: a number or amount, a date or time, a proper name, an e-mail / phone / URL, a first-person
statement of need, preference, constraint or circumstance ("we're pre-approved", "I can't do stairs"), or a
negation. Small talk, thanks and bare questions to the assistant are left out. Assistant sentences are kept
only when they record a commitment with specifics (a booked time, a quoted figure), since the assistant's
explanations can be regenerated but its promises cannot. Duplicates are dropped (first occurrence wins).

An agent's turn (one whose tool calls were answered: a coding agent's, say) is read differently. The human
message that opened it is an instruction, and an instruction is kept whole: "Use the logger in storage.py
instead of print statements." holds no number or first-person signal, yet dropping it changes the work.
Tool outputs are not read for sentences (they are code, listings, logs), but the lines that report a failure
(a test marked ``FAILED``, an ``ERROR`` / ``Error`` line, a ``Traceback``) are kept, at most five a turn: the
failing test is what the agent is fixing long after the run that showed it has been compacted away.

The result is a compact block grouped by turn, e.g. ``t3 user: We're pre-approved for $450k.``; it is a
pure function of the dropped messages, so the same history always yields the same bytes.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
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
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|\n|$)")
_NUMBER = re.compile(r"\d")
_CONTACT = re.compile(r"@\w|https?://|www\.|\+?\d[\d\s().-]{7,}\d")
_MONTHS = (
    "january|february|march|april|may|june|july|august|september|october|november|december|"
    "jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    "tomorrow|tonight|weekend|next week|next month|next year|spring|summer|fall|autumn|winter"
)
_FIRST_PERSON_WORDS = "i|i'm|im|i've|i'd|i'll|we|we're|we've|we'd|we'll|my|our|us|me"
_SIGNAL_WORDS = (
    r"need|needs|want|wants|looking|prefer|preferably|must|have to|has to|require|required|budget|afford|"
    r"approved|pre-?approv\w*|loan|mortgage|lender|cash|down payment|deposit|price|cost|pay|paying|salary|income|"
    r"live|living|lives|work|works|working|moving|move|relocat\w*|commute|school|schools|kids|children|family|"
    r"dog|dogs|cat|cats|pet|pets|allerg\w*|wheelchair|stairs|garage|yard|pool|bedroom\w*|bath\w*|sq\s?ft|"
    r"square feet|acre\w*|condo|townhouse|house|home|apartment|area|areas|neighbou?rhood\w*|near|close to|"
    r"timeline|deadline|by|before|after|until|within|asap|urgent|only|avoid|hate|love|like|don't|dont|can't|cant|"
    r"won't|wont|not|no|never|without|instead|rather|name|email|phone|call|text|contact|company|team|users|"
    r"seats|plan|contract|renewal|currently|already|using|use|switch\w*|pets?|parking|budget"
)
_COMMITMENT_WORDS = r"scheduled|booked|confirmed|reserved|sent|set up|quoted|will call|will email|i'll|we'll"
_COMMITMENT_LITERALS = tuple(_COMMITMENT_WORDS.split("|"))  # plain words: each is its own literal text
_PROPER = re.compile(r"(?<=[\w,;:] )[A-Z][a-z]+")
_FILLER = re.compile(
    r"^(?:ok(?:ay)?|thanks?(?: you)?|thank you|great|cool|sure|yes|yeah|yep|no|nope|sounds good|perfect|"
    r"got it|hi|hello|hey|awesome|nice)\b[\s!.,]*$",
    re.IGNORECASE,
)
_LABELLED = re.compile(r"^[A-Za-z][\w /&'-]{0,30}:\s*\S")  # "Pets: two indoor cats."
_SHORT_WORDS = 12
_MAX_SENTENCE_CHARS = 400
_FAILURE_MARKS = ("FAILED", "ERROR", "Error", "Traceback")
_MAX_FAILURE_LINES = 5


class _Words:
    r"""``\b(?:alternatives)\b``, case-insensitive, and an equivalent that is ~7x faster on lower-cased text.

    The slow form, on text with mixed case, makes the regex engine try every alternative at every position. The
    fast one groups the alternatives by first letter (each must begin with a lower-case letter) and checks the
    leading word boundary after that letter (``(?<!\w.)``), so that the engine's first-character set skips most
    positions in C. ``search(text, low)`` gives the same answer as the slow form on ``text`` whenever ``low`` is
    ``fold(text)``; the unit tests check the two against each other.
    """

    __slots__ = ("fast", "slow")

    def __init__(self, alternatives: str) -> None:
        self.slow = re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)
        groups: dict[str, list[str]] = {}
        for alternative in alternatives.split("|"):
            groups.setdefault(alternative[0], []).append(alternative[1:])
        parts = [rf"{first}(?<!\w.)(?:{'|'.join(sorted(set(rest)))})" for first, rest in sorted(groups.items())]
        self.fast = re.compile(rf"(?:{'|'.join(parts)})\b")

    def search(self, text: str, low: str | None) -> bool:
        return (self.fast.search(low) if low is not None else self.slow.search(text)) is not None


_TIME = _Words(_MONTHS)
_FIRST_PERSON = _Words(_FIRST_PERSON_WORDS)
_SIGNAL = _Words(_SIGNAL_WORDS)
_COMMITMENT = _Words(_COMMITMENT_WORDS)


def sentences(text: str) -> list[str]:
    """The sentences of ``text``, stripped, empty ones dropped."""
    return [s.strip() for s in _SENTENCE.findall(text) if s.strip()]


def _has_contact(sentence: str) -> bool:
    # Only reached without a digit in the sentence: then only "@x", "http(s)://" and "www." can match.
    return ("@" in sentence or "//" in sentence or "www." in sentence) and _CONTACT.search(sentence) is not None


def _is_user_fact(sentence: str) -> bool:
    if _FILLER.match(sentence):
        return False
    if _NUMBER.search(sentence) or _has_contact(sentence):
        return True
    if sentence.endswith("?"):
        return False  # a question to the assistant: its answer is the assistant's, not the user's fact
    low = fold(sentence)
    if _LABELLED.match(sentence) or _TIME.search(sentence, low) or _PROPER.search(sentence):
        return True
    if _SIGNAL.search(sentence, low):
        return _FIRST_PERSON.search(sentence, low) or len(sentence.split()) <= _SHORT_WORDS
    return False


def _is_assistant_fact(sentence: str) -> bool:
    low = fold(sentence)  # the commitment first: the rarer of the two conditions
    return _COMMITMENT.search(sentence, low) and bool(_NUMBER.search(sentence) or _TIME.search(sentence, low))


@functools.lru_cache(maxsize=65_536)
def _text_facts(role: str, text: str) -> tuple[str, ...]:
    """The fact sentences of one message text. Memoized: the gateway sees the same history on every turn, so
    each message is read once, not once per turn (the 100-turn benchmark relies on it).

    An assistant fact needs a commitment phrase, so only the sentences where one occurs are examined (found
    with ``str.find``): long explanations cost a few substring searches, not a regex pass per sentence.
    """
    if role == "user":
        return tuple(_clip(s) for s in sentences(text) if _is_user_fact(s))
    low = fold(text)
    if low is None:
        starts = [m.start() for m in _COMMITMENT.slow.finditer(text)]
    else:  # where the commitment phrases occur at all (str.find); the sentence check below is the exact one
        starts = []
        for literal in _COMMITMENT_LITERALS:
            at = low.find(literal)
            while at >= 0:
                starts.append(at)
                at = low.find(literal, at + 1)
        starts.sort()
    # Only the sentences a commitment starts in can be facts (no phrase spans a sentence break), in order.
    found: list[str] = []
    previous = -1
    for at in starts:
        begin, sentence = _sentence_at(text, at)
        if begin != previous:
            previous = begin
            if sentence and _is_assistant_fact(sentence):
                found.append(_clip(sentence))
    return tuple(found)


def _sentence_at(text: str, at: int) -> tuple[int, str]:
    """Where the sentence holding ``text[at]`` (not a break) begins, and the sentence as ``sentences`` gives
    it: the run of non-break characters around ``at`` and the ``.!?`` run or newline that ends it."""
    # The line first: the other marks are then looked for within it, not across a long text.
    line = text.rfind("\n", 0, at) + 1
    begin = max(line, text.rfind(".", line, at) + 1, text.rfind("!", line, at) + 1, text.rfind("?", line, at) + 1)
    end = text.find("\n", at)
    if end < 0:
        end = len(text)
    for mark in ".!?":
        found = text.find(mark, at, end)
        if found >= 0:
            end = found
    stop = end
    if end < len(text):
        if text[end] == "\n":
            stop = end + 1
        else:
            while stop < len(text) and text[stop] in ".!?":
                stop += 1
    return begin, text[begin:stop].strip()


def _clip(sentence: str) -> str:
    if len(sentence) > _MAX_SENTENCE_CHARS:
        sentence = sentence[:_MAX_SENTENCE_CHARS] + "…"
    # ``str.split`` splits on the characters ``\s`` matches (``str.isspace``) and the sentence is stripped, so this
    # is ``re.sub(r"\s+", " ", sentence)`` at a third of the cost (the fast-path tests compare the two).
    return " ".join(sentence.split())


@functools.lru_cache(maxsize=16_384)
def failure_lines(text: str) -> tuple[str, ...]:
    """The first ``_MAX_FAILURE_LINES`` distinct lines of a tool output that report a failure, in order, found
    with ``str.find`` (a 10 kB output costs a few substring searches, not a regex pass). Memoized like
    ``_text_facts``. Each mark's own first five distinct lines are enough: a line among the first five overall
    is among the first five of any mark it holds (the unit tests compare it with a plain line-by-line scan)."""
    found: dict[str, int] = {}  # line -> where it first occurs
    for mark in _FAILURE_MARKS:
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
    return tuple(sorted(found, key=found.__getitem__)[:_MAX_FAILURE_LINES])


def facts_of_turn(messages: Sequence[Any], texts: Sequence[tuple[Any, str]]) -> list[tuple[str, str]]:
    """The facts of one turn: ``messages`` (its messages, in order) and ``texts`` (``(role, message_text)`` of
    its dict messages, as ``split_turns`` collects them). An agent's turn (one with ``tool_result`` blocks)
    keeps its opening instruction whole and the failure lines of its tool outputs (see the module doc)."""
    if len(messages) < 3:  # a tool result needs a human message and a tool call before it
        return facts_of_texts(texts)
    failures: list[tuple[str, str]] = []
    agent = False
    for message in messages[1:]:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list) or message.get("role") != "user":
            continue
        for block in content:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                agent = True
                if len(failures) < _MAX_FAILURE_LINES:
                    failures.extend(("tool", line) for line in failure_lines(block_text(block)))
    if not agent or not texts or texts[0][0] != "user" or not texts[0][1].strip():
        return facts_of_texts(texts)
    instruction = ("user", _clip(texts[0][1].strip()))
    return [instruction, *facts_of_texts(texts[1:]), *failures[:_MAX_FAILURE_LINES]]


def extract_facts(messages: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(role, sentence)`` for every fact of the turn ``messages``, in order (duplicates kept: ``render_memory``
    drops them across the whole compacted span)."""
    return facts_of_turn(messages, [(message.get("role"), message_text(message)) for message in messages])


def facts_of_texts(texts: Sequence[tuple[Any, str]]) -> list[tuple[str, str]]:
    """``extract_facts`` of messages already reduced to ``(role, message_text)``."""
    found: list[tuple[str, str]] = []
    for role, text in texts:
        # An empty text (a message of tool_result blocks, say) has no facts: no need to look it up.
        if text and (role == "user" or role == "assistant"):
            for sentence in _text_facts(role, text):
                found.append((role, sentence))
    return found


def render_memory(
    first_turn: int, last_turn: int, omitted: int, facts: Sequence[tuple[int, str, str]], summary: str | None = None
) -> str:
    """The memory block's text: a header saying what was removed, then one line per fact (first occurrence of
    each sentence wins), or the stored summary when a cheap model wrote one."""
    head = (
        f'{MEMORY_TAG} turns="{first_turn + 1}-{last_turn + 1}" omitted="{omitted}">\n'
        "Earlier turns of this conversation were condensed to save tokens. "
    )
    if summary is not None:
        return head + "Summary of them:\n" + summary.strip() + "\n</conversation-memory>"
    seen: set[str] = set()
    lines: list[str] = []
    for turn, role, text in facts:
        normal = text.lower()
        if normal in seen:
            continue
        seen.add(normal)
        lines.append(f"- t{turn + 1} {role}: {text}")
    body = "Statements from them, verbatim:\n" + "\n".join(lines) + "\n" if lines else "No facts were found in them.\n"
    return head + body + "</conversation-memory>"
