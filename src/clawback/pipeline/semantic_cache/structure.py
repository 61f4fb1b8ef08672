"""Structural guards: what a question asks about and who does what to whom, read from word order, not word lists.

The lexical guards (``guards``) compare the details a question names; they cannot see two questions made of
the same words in another order. "Can the HOA sue a homeowner?" / "Can a homeowner sue the HOA?", "Sort from
cheapest to most expensive" / "... from most expensive to cheapest", "If I refer a friend" / "If a friend refers
me" hold the same words and score 0.97-0.995: only the order says the answer differs. Two checks over the folded
word sequence (``guards.Features.tokens``):

- ``swapped``: both sides hold the same words once articles, determiners, possessives and auxiliaries are
  dropped, pronouns read as persons (I/me/we/us are one person) and inflections folded, and one side is the
  other with two blocks of words exchanged around a non-empty middle that stays in place: an actor or object
  swapped around a verb or a preposition. A middle holding "and" / "or" is a coordination, where the order says
  nothing ("houses and condos"). A clause moved to the front ("Before I buy, should I ...") is a rotation with no
  middle, not an exchange.
- ``focus``: what the question asks for, from its question words: a duration, a validity, an amount, a count, a
  time, a place, a person, a reason, a frequency, a distance, contents, a procedure ("how do I", "¿cómo
  ...?"). Two questions with different foci are
  different questions ("How long does pre-approval take?" / "How long is a pre-approval valid?", "¿Cuánto tarda
  ...?" / "¿Cuánto cuesta ...?"). "what", "which", "how", "qué", "cuál", "cómo" on their own name no focus
  (they ask for anything: "What are your office hours?" / "When is your office open?"); a question with two foci
  ("How much is the fee and what does it cover?") is compared by all of them, and a duration and a time are
  compatible ("How long do refunds take?" / "When will I see my refund?"). A deadline to act ("How long do I have
  to request a refund?", "¿Cuánto tiempo tengo para pedirlo?") is not a duration ("How long does a refund take to
  show up?", "¿Cuánto tarda?"); it is compatible with a time and a validity. A yes / no question of what something
  includes ("Does the price include HOA fees?") asks for contents, not an amount ("How much are the HOA fees?").

- ``related_differently``: both questions hold the same asymmetric relation word of a closed class (before/after,
  then, above/below, over/under, encima/debajo, arriba/abajo, antes/después, to, than) and the content words they
  share stand on opposite sides of it, its direction read in ("X before Y" is "Y after X"): "Should I get
  pre-approved before looking at houses?" / "Should I look at houses before getting pre-approved?" (0.966).

``swapped`` takes folded words (lower case, no accents, ``'s`` dropped), ``focus_differs`` lower-cased words with
their accents; both depend on nothing else.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

__all__ = ["focus_differs", "negated_differently", "related_differently", "reordered", "swapped"]


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Dropped before the order is compared: they carry no actor or object (English and Spanish, accents folded).
_DROP = _set(
    "the a an this that these those my your his her its our their mine yours some any each every "
    "is are am was were be been being do does did can could would should will shall may might must have has had "
    "el la los las lo un una unos unas este esta estos estas ese esa esos esas mi mis tu tus su sus nuestro "
    "nuestra nuestros nuestras es son esta estan era ser estar puede pueden puedo podemos se"
)
_PERSONS = {
    **dict.fromkeys(_set("i me we us myself ourselves yo nosotros nosotras nos mi"), "@1"),
    **dict.fromkeys(_set("you yourself yourselves usted ustedes te ti"), "@2"),
    **dict.fromkeys(_set("he him she they them el ella ellos ellas le les"), "@3"),
}
_CONTRACTIONS = {"al": "a", "del": "de"}
_COORDINATORS = _set("and or nor y o e u ni plus")


def _stem(word: str) -> str:
    """Inflection folded just enough to compare two sides ("refers"/"refer", "buying"/"buy", "parents"/"parent")."""
    for suffix in ("ing", "ies", "ed", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)] + ("y" if suffix == "ies" else "")
            break
    return word[:-1] if word.endswith("e") and len(word) > 3 else word  # "invite", "invites", "invited": "invit"


# Politeness moved around a question says nothing of who acts: "Thanks! Can I export ...?" / "Can I export ...? Thanks!"
_POLITENESS = _set("thanks thank please hi hello hey gracias hola")


def _sequence(tokens: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for token in tokens:
        token = _CONTRACTIONS.get(token, token)
        if token in _POLITENESS:
            continue
        if token in _PERSONS:
            out.append(_PERSONS[token])
        elif token not in _DROP and token.isalnum():
            out.append(_stem(token))
    return tuple(out)


@lru_cache(maxsize=65_536)
def _exchanged(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether ``b`` is ``a`` with two blocks X and Y exchanged around a middle M that stays: P X M Y S -> P Y M X S."""
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n):
                middle = a[j:k]
                if any(w in _COORDINATORS for w in middle):
                    continue  # coordinated parts: "do I owe you or do you owe me" either way round
                for end in range(k + 1, n + 1):
                    x, y = a[i:j], a[k:end]
                    if x != y and a[:i] + y + middle + x + a[end:] == b:
                        return True
    return False


def swapped(a: Sequence[str], b: Sequence[str]) -> bool:
    """Same words, two of their actors or objects exchanged around a verb or preposition (see the module doc)."""
    sa, sb = _sequence(a), _sequence(b)
    if sa == sb or Counter(sa) != Counter(sb) or len(sa) > 24:
        return False
    return _exchanged(sa, sb)


# Personal pronouns only: "el" and "mi" fold from "él" / "mí" but are far more often an article and a possessive.
_PRONOUNS = {word: person for word, person in _PERSONS.items() if word not in ("el", "mi")}
_PRONOUN_CONTRACTIONS = {"i'm": "i", "i'd": "i", "i've": "i", "i'll": "i", "we're": "we", "you're": "you",
                         "they're": "they"}  # fmt: skip
# Question words (folded): a question word fronts what it asks about, so the order no longer says who acts.
_QUESTION_WORDS = _set("what which how where when who whom whose why que cual cuales como donde cuando quien "
                       "quienes cuanto cuanta cuantos cuantas")  # fmt: skip
# Prepositions and particles a rewording moves or swaps ("complaining about the noise from the tenant").
_RELATIONS = _set("about from of to in on at for by with into onto over under below above near behind after before "
                  "de en por para con sobre desde hasta")  # fmt: skip


def _actors(tokens: Sequence[str]) -> tuple[str, ...]:
    """Personal pronouns as persons and content words stemmed, in order; everything else dropped."""
    out: list[str] = []
    for token in tokens:
        token = _CONTRACTIONS.get(_PRONOUN_CONTRACTIONS.get(token, token), token)
        if token in _PRONOUNS:
            out.append(_PRONOUNS[token])
        elif (token.isalnum() and len(token) >= 3 and token not in _DROP and token not in _RELATIONS
              and token not in _POLITENESS):  # fmt: skip
            out.append(_stem(token))
    return tuple(out)


def reordered(a: Sequence[str], b: Sequence[str]) -> bool:
    """Same content words, a person placed among them differently, no question word (see the module doc)."""
    if any(w in _QUESTION_WORDS for w in a) or any(w in _QUESTION_WORDS for w in b):
        return False
    sa, sb = _actors(a), _actors(b)
    content_a = {w for w in sa if not w.startswith("@")}
    if len(content_a) < 2 or content_a != {w for w in sb if not w.startswith("@")}:
        return False
    for person in sorted(set(sa) & set(sb) - content_a):
        before_a = set(sa[: sa.index(person)]) & content_a
        before_b = set(sb[: sb.index(person)]) & content_a
        if before_a != before_b:
            return True
    return False


# Asymmetric relation words (folded), a closed class: word -> (axis, direction). Direction +1: the words on its
# left come first / stand higher / are the source / are greater ("X before Y", "X above Y", "from X to Y", "X more
# than Y"); -1: the words on its right do ("X after Y", "X below Y"). "than" takes its direction from the comparative.
_ORDERING = {
    **dict.fromkeys(_set("before then antes luego"), ("time", 1)),
    **dict.fromkeys(_set("after despues"), ("time", -1)),
    **dict.fromkeys(_set("above over encima arriba"), ("height", 1)),
    **dict.fromkeys(_set("below under beneath underneath debajo abajo"), ("height", -1)),
    "to": ("path", 1), "hasta": ("path", 1), "than": ("degree", 1),
}  # fmt: skip
# Relation words and question words stand on no side: a question word fronts what it asks about wherever the
# rewording puts it ("What does 'under contract' mean?" / "A listing says under contract - what does that mean?").
_IGNORED = _ORDERING.keys() | _QUESTION_WORDS | {"por"}
_LESSER = _set("less fewer smaller cheaper lower shorter younger smaller worse menos menor")


def _sides(clauses: Sequence[Sequence[str]]) -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """Per axis, the content words that come first and second by its first relation word (see ``_ORDERING``).

    A relation word opening its clause ("After setting up 2FA, how do I ...") takes that clause as its object and
    the rest of the sentence as its subject: it reads as "how do I ... after setting up 2FA"."""
    out: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    for c, clause in enumerate(clauses):
        for i, word in enumerate(clause):
            if word not in _ORDERING or _ORDERING[word][0] in out:
                continue
            axis, direction = _ORDERING[word]
            if word == "than" and any(w in _LESSER for w in clause[max(0, i - 3) : i]):
                direction = -1
            if i == 0 and len(clauses) > 1:
                right = clause[1:]
                left = [w for other in [*clauses[:c], *clauses[c + 1 :]] for w in other]
            else:
                left = [w for other in clauses[:c] for w in other] + list(clause[:i])
                right = list(clause[i + 1 :]) + [w for other in clauses[c + 1 :] for w in other]
            first, second = (frozenset(_actors([w for w in side if w not in _IGNORED])) for side in (left, right))
            out[axis] = (first, second) if direction > 0 else (second, first)
    return out


def related_differently(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]]) -> bool:
    """Both questions relate their words by the same asymmetric relation (before/after, above/below, from/to,
    more/less than) and the words they share stand on opposite sides of it: "get pre-approved before looking at
    houses" / "look at houses before getting pre-approved", "la cochera está debajo del departamento" / "el
    departamento está debajo de la cochera", "X before Y" / "X after Y". ``a`` and ``b``: folded words per clause
    (commas split clauses)."""
    sides_a, sides_b = _sides(a), _sides(b)
    for axis in sides_a.keys() & sides_b.keys():
        (first_a, second_a), (first_b, second_b) = sides_a[axis], sides_b[axis]
        shared = (first_a | second_a) & (first_b | second_b)
        if shared & first_a & second_b - first_b and shared & second_a & first_b - second_b:
            return True
    return False


_TIME_UNITS = _set("minute minutes hour hours day days week weeks month months year years dia dias día días "
                   "semana semanas mes meses ano año anos años hora horas minuto minutos")  # fmt: skip
_VALIDITY = _set("valid validity expire expires expiration vigente vigencia vence vencen caduca caducan")
_PROCESS = _set("take takes taking tarda tardan demora demoran dura duran")
_COST = _set("cost costs cuesta cuestan cobran cobra charge charges price precio vale valen sale")
_CONTENTS = _set("include includes included cover covers contain contains incluye incluyen cubre cubren contiene")
# Nouns that measure time: "how much notice", "how far in advance", "¿con cuánta anticipación?" ask for a duration.
_TIME_NOUNS = _set("time notice advance tiempo anticipacion anticipación antelacion antelación aviso")
_SINGLE = {
    "when": "time", "cuándo": "time", "where": "place", "dónde": "place", "adónde": "place", "who": "person",
    "whom": "person", "whose": "person", "quién": "person", "quiénes": "person", "why": "reason",
}  # fmt: skip
# "when I tried to pay", "where the house is": a question word followed by its clause's subject opens a subordinate
# clause, not the question (a question inverts: "when will I", "where is the house"). Spanish marks the difference
# with the accent: "cuándo" asks, "cuando" does not, so Spanish question words are matched accented only.
_SUBJECTS = _set("i you we they he she it the a an my your our their his her this that there someone")
# "how do I" / "cómo" + a verb ask for a procedure: not an amount ("¿cómo cambio de plan?" / "¿cuánto cuesta cada
# plan?"), not a person ("how do I delete my account" / "who can delete the account"); a procedure and a place are
# often one question ("How do I pay rent?" / "Where can I pay rent?"), and so is whom to ask ("Who do I call?")
_AUXILIARIES = _set("do can could should would")
_ASKERS = _set("i we you")
_DESCRIBED = _set("es son está están esta estan era fue funciona funcionan")
_COMPATIBLE = frozenset(
    {
        frozenset({"time", "duration"}),
        frozenset({"time", "validity"}),
        frozenset({"method", "place"}),
        frozenset({"time", "deadline"}),
        frozenset({"validity", "deadline"}),
    }
)
""""How long do refunds take?" / "When will I see my refund?": a duration and a time are often one question."""


def _duration_kind(words: frozenset[str]) -> str:
    """A "how long" question asks how long something takes or lasts, or how long it stays valid."""
    return "validity" if words & _VALIDITY and not words & _PROCESS else "duration"


# "How long do I have to request a refund?", "How many days do we get to cancel?", "¿Cuánto tiempo tengo para
# pedir un reembolso?" ask for a deadline to act, not how long a process takes ("How long does a refund take to
# show up?", "¿Cuánto tarda en llegar?"); a deadline and a time or a validity are often one question ("When is the
# deadline to ...?", "How long is the offer valid?"). "have to wait / stay / keep" is an obligation that lasts
# ("How long do I have to wait for my refund?"): a duration; so is Spanish "tengo que esperar".
_HAVE = _set("have has get gets tengo tienes tiene tenemos tienen hay")
_LASTING = _set("wait stay keep remain live hold be give provide")


def _deadline(tokens: Sequence[str], start: int) -> bool:
    """Whether the duration question opened at ``start`` asks how long the asker has to act."""
    for index in range(start, min(start + 6, len(tokens))):
        word, rest = tokens[index], tuple(tokens[index + 1 : index + 3])
        if word not in _HAVE:
            continue
        if word in ("have", "has", "get", "gets"):  # "how long has it been": no "to", no deadline
            return len(rest) == 2 and rest[0] == "to" and rest[1] not in _LASTING
        return rest[:1] == ("para",)
    return False


# A yes / no question of what something includes ("cover" is left out: "does someone else cover it?" asks who pays)
_YES_NO = _set("does do is are will would incluye incluyen")
_INCLUDES = _set("include includes included incluye incluyen incluido incluida incluidos incluidas")


def _foci(tokens: Sequence[str]) -> frozenset[str]:
    words = frozenset(tokens)
    found: set[str] = set()
    for index, word in enumerate(tokens):
        nxt = tokens[index + 1] if index + 1 < len(tokens) else ""
        after = tokens[index + 2] if index + 2 < len(tokens) else ""
        if word == "how":
            if nxt in _AUXILIARIES and after in _ASKERS:
                found.add("method")  # "how do I / how can I change my plan": a procedure
            elif nxt == "long":
                found.add("deadline" if _deadline(tokens, index + 2) else _duration_kind(words))
            elif nxt == "much":
                deadline = after == "time" and _deadline(tokens, index + 3)  # not "how much notice do I have to give"
                found.add("deadline" if deadline else "duration" if after in _TIME_NOUNS else "amount")
            elif nxt == "many":
                timed = after in _TIME_UNITS
                found.add(("deadline" if _deadline(tokens, index + 3) else "duration") if timed else "count")
            elif nxt in ("often", "frequently"):
                found.add("frequency")
            elif nxt == "far":
                found.add("duration" if after == "in" else "distance")  # "how far in advance"
            elif nxt == "soon":
                found.add("time")
        elif word in ("cuánto", "cuánta", "cuántos", "cuántas"):
            if (nxt == "tiempo" or nxt in _TIME_UNITS) and _deadline(tokens, index + 2):
                found.add("deadline")  # "¿cuánto tiempo tengo para pedirlo?", "¿cuántos días tengo para firmar?"
            elif nxt in _TIME_NOUNS or nxt in _TIME_UNITS or nxt in _PROCESS:
                found.add(_duration_kind(words) if nxt not in _PROCESS else "duration")
            elif word in ("cuántos", "cuántas") and nxt not in _COST:
                found.add("count")
            else:
                found.add("amount")
        elif word in ("what", "what's", "qué", "which", "cuál") and nxt in ("time", "day", "date", "hora", "día",
                                                                             "fecha"):  # fmt: skip
            found.add("time")
        elif word == "cómo" and nxt and nxt not in _DESCRIBED:
            found.add("method")  # "¿cómo cambio de plan?", "¿cómo se paga?"
        elif word == "por" and nxt == "qué":
            found.add("reason")
        elif word in ("what", "what's", "qué") and words & _CONTENTS:
            found.add("contents")
        elif word == "who" and nxt in _AUXILIARIES and after in _ASKERS:
            found |= {"method", "person"}  # "who do I contact about billing?": "how do I contact billing?" too
        elif word in _SINGLE and nxt not in _SUBJECTS:
            found.add(_SINGLE[word])
    if not found and words & _INCLUDES and tokens[:1] and tokens[0] in _YES_NO:
        found.add("contents")  # "Does the price include HOA fees?" asks what is in it, not how much the fees are
    return frozenset(found)


def focus_differs(a: Sequence[str], b: Sequence[str]) -> bool:
    """Both questions name what they ask for, and nothing one asks for is compatible with what the other asks for.

    ``a`` and ``b`` are lower-cased words with their accents (see ``_SUBJECTS``)."""
    fa, fb = _foci(a), _foci(b)
    if not fa or not fb:
        return False
    return not any(x == y or frozenset({x, y}) in _COMPATIBLE for x in fa for y in fb)


def negated_differently(a: Sequence[Sequence[str]], b: Sequence[Sequence[str]], negators: frozenset[str]) -> bool:
    """One clause negated on each side, and the words they share negated on one side are affirmed on the other:
    "My card was charged, but I don't see the order." / "My order is there, but my card was never charged." (the
    same count of negations, so the negation guard passes it). ``a`` and ``b``: folded words per clause."""

    def split(clauses: Sequence[Sequence[str]]) -> tuple[frozenset[str], frozenset[str]] | None:
        negated = [c for c in clauses if any(w in negators or w.endswith("n't") for w in c)]
        if len(negated) != 1 or len(clauses) < 2:
            return None
        rest = [w for c in clauses if c is not negated[0] for w in c]
        return (frozenset(_actors([w for w in negated[0] if w not in _IGNORED])),
                frozenset(_actors([w for w in rest if w not in _IGNORED])))  # fmt: skip

    sa, sb = split(a), split(b)
    if sa is None or sb is None:
        return False
    (neg_a, rest_a), (neg_b, rest_b) = sa, sb
    moved_a, moved_b = neg_a & rest_b - neg_b, neg_b & rest_a - neg_a
    return bool(moved_a and moved_b)
