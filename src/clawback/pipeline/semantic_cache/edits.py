"""Verification of a candidate by its edit: a near copy of the stored question is served only when each of its edits
is one of a small closed class of edits that cannot change the answer; any other edit refuses it.

Why: the hard negatives that reach the threshold are, almost all, the stored question with one or two spans
edited, and the span that changes the answer can be any word: a content word ("Is the pool *heated* / *open* in
winter?"), but just as well a quantifier ("Were *all* / *some* of my files deleted?", "Is *the entire* / *half
the* deposit returned?"), a tense ("*Did* / *Will* the HOA raise fees?", "¿*Ya* se *firmó* / *Cuándo* se
*firma*?"), a scope ("for *this* / *every* project"), a particle ("move *in* / *out*") or a negation ("¿Se
aceptan perros?" / "¿*No* se aceptan perros *ni gatos*?"). Everything the two questions share weighs for them in
a sentence embedding, so the words that change the answer are outvoted (0.83-0.98). A list of dangerous words,
or its mirror, a list of words safe to ignore, is beaten by the next writer's next word: refusing a changed
*content* word took three files to no wrong hit and the fourth (``holdout3.jsonl``) to 23. So the rule is
inverted: a near copy says "the same question, but", and the "but" must be shown harmless.

- both questions as folded word tokens, in order (``guards.features``: case, accents and punctuation are already
  gone), contractions expanded (``tokens``: "can't" and "cannot" are "can not", "I'm" is "i am"; a negation stays
  a word that differs);
- their alignment (``difflib``) on stems (so "cashier" / "cashiers" is one edited word, not a broken shape): a
  near copy has at most ``MAX_EDITS`` changed spans and keeps at least ``MIN_SHARED[spans]`` of the shorter
  question unchanged (an identical question after folding is served);
- a near copy is served only when every changed span is harmless (``harmless``): politeness and fillers added or
  dropped ("please", "hi", "thanks", "por favor"; not "just", which can mean "only"), an article added, dropped
  or swapped ("the" / "a", "el" / "la"), the "is" a contraction folds away ("what's" / "what is"), or an
  interrogative auxiliary of the same meaning ("can I" / "could I" / "may I" / "is it possible to", "how do I" /
  "how can I" / "how would I", "need to" / "have to"). Anything else refuses it, function word or not: a
  quantifier, a tense, a modal, a pronoun or possessive, a preposition or particle, a negation, a number, a
  plural, a typo, a content word;
- also harmless, each measured on the tuning files (seven, then nine; paraphrases admitted, no negative): the
  asker's own possessive read as an article ("my" / "the", never "your"), a greeting or "hi there", "you guys",
  "¿De cuánto ...?", "where / who do I" with "can" / "should", "cambio" / "puedo cambiar", a spelling variant, a
  number in digits or words, a word the guards' lexicons hold for the same thing (``guards.same_thing``), one
  block of words moved (the order guards, which run first, read what a move changes), and (nine files,
  2026-12-04 evening) a question's opening auxiliary agreeing in number ("Is / Are utilities included?"), and
  (ten files) one or two content words swapped for a synonym of the curated lexicon (``synonyms``: "big" /
  "spacious", "allowed" / "permitted", "renta" / "alquiler"; 8 paraphrases above the threshold, no negative);
- a near copy refused so is served after all when its question frames, read as one (``frames``, ``FRAMES``: "how
  do I" / "what do I do to" / "is there a way to", "can I" / "am I allowed to", "puedo" / "podría", "what" /
  "which", "the" / "this" / "my"), leave a near copy with harmless edits only.

Which classes are in, and the span limits, were decided by measuring on the four tuning files (calibration,
holdout, holdout2, holdout3; ``benchmarks/README.md``, semantic cache): the paraphrases that are near copies are
almost all rewordings outside any harmless class ("incluye" / "trae", "big" / "spacious"), so they are paid calls
whatever the class holds; plurals and one-letter edits were left out because the files hold negatives of exactly
that shape ("spots" / "spot", "employer" / "employee", "incluida" / "incluido") and no paraphrase above the
threshold that needs them. A reworded paraphrase (in order, a median of 30-43 % of the shorter question's words
kept) is not a near copy and goes through the other checks as before. Cheap (an alignment of two short token
lists: p50 20 us at load 7-8), so it runs before the word alignment, which may embed words.
"""

from __future__ import annotations

from difflib import SequenceMatcher
from functools import lru_cache

from clawback.pipeline.semantic_cache.alignment import stem
from clawback.pipeline.semantic_cache.guards import _NUMBER_WORDS, _SOFT_NUMBERS, features, fold_words, same_thing
from clawback.pipeline.semantic_cache.synonyms import synonym

__all__ = ["FRAMES", "MAX_EDITS", "MIN_SHARED", "frames", "harmless", "near_copy", "tokens"]

MAX_EDITS = 3
MIN_SHARED = {0: 0.0, 1: 0.5, 2: 0.5, 3: 0.6}
"""Per number of changed spans, the share of the shorter question that must stay unchanged for a near copy."""

# Words a question adds or drops without asking anything else (English and Spanish, folded); not "just"
# ("only").
_FILLERS = frozenset(fold_words("please pls plz kindly hi hello hey thanks thank thx gracias hola porfa porfavor"))
_FILLER_PHRASES = (("thank", "you"), ("por", "favor"), ("buenos", "dias"), ("buenas", "tardes"), ("buenas", "noches"),
                   ("hi", "there"), ("hello", "there"))  # fmt: skip
# Articles, and the asker's own possessive, which a question adds or drops as it does an article ("Can I pay my rent
# online?" / "Can I pay rent online?", "¿Cómo cancelo mi / la suscripción?"); never "your" / "su" (whose)
_ARTICLES = frozenset(fold_words("the a an el la los las un una my our mi mis"))
# ... but not in place of an indefinite article: "¿Cómo alquilo un piso?" asks how to rent one as a tenant, "¿Cómo
# alquilo mi piso?" how to let one's own (holdout10's wrong hit, 0.954): "a" / "my" says whose thing it is.
_INDEFINITE = frozenset(fold_words("a an un una unos unas"))
_POSSESSIVE = frozenset(fold_words("my our mi mis"))
# "what's" folds to "what" (the guards' folding drops "'s"), so "what is" differs by one "is" after these words.
_CONTRACTED_IS = frozenset(fold_words("what that there it where how who here when why time"))
_PRONOUNS = frozenset(fold_words("i we you"))
# Interrogative auxiliaries of the same meaning: (the group, the words one of which must come before, the words one
# after). After a question word the auxiliary asks nothing of its own: "where do I / where can I find my invoices",
# "who do I / who should I contact" (tuning files, 2026-12-04: 9 paraphrases, no negative; without a question word
# "do" / "can" / "should" differ: "Do I need to enable 2FA?" / "Can I enable 2FA?", "Do I have to ...?" / "Should
# I ...?").
_SAME_AUXILIARY: tuple[tuple[frozenset[str], frozenset[str] | None, frozenset[str]], ...] = (
    (frozenset({"can", "could", "may"}), None, _PRONOUNS),  # can I / could I / may I
    (frozenset({"do", "can", "could", "would"}), frozenset({"how", "where"}), _PRONOUNS),  # how do I / how can I
    (frozenset({"do", "should"}), frozenset({"who", "where", "what", "how", "when", "which"}), _PRONOUNS),
    (frozenset({"need", "have"}), None, frozenset({"to"})),  # need to / have to
)
# Words of one meaning wherever they stand ("when is rent due each / every month"), and a preposition that says
# nothing after "included" ("is parking included in / with the rent").
_SAME_WORDS = (frozenset({"each", "every"}), frozenset({"you", "y'all"}))
# An auxiliary agreeing with its subject's number says nothing of its own ("Is / Are utilities included in the
# rent?"): a subject whose number changed is an edit of its own, which the alignment on stems reports
_AGREEMENT = (frozenset({"is", "are"}), frozenset({"was", "were"}), frozenset({"does", "do"}))
# "Is there a / any move-in fee?", "Are there (any) HOA restrictions?": "any" after an existential "there"; "at all"
# closing a question ("Do you ship internationally at all?")
_EXISTENTIAL_ANY = frozenset({"any"})
_INCLUDED = frozenset(fold_words("included includes include"))
_INCLUDED_WITH = frozenset({"in", "with"})
# Greetings only at the start of a question ("Buenas, ¿sigue disponible?"; "buenas escuelas" are good schools), the
# "guys" of "you guys", a preposition fronting a Spanish question word of amount ("¿De cuánto es el depósito?",
# "¿En cuánto se renta?": the same question as "¿Cuánto es ...?").
_OPENING_GREETINGS = frozenset(fold_words("buenas buenos"))
_FRONTED = frozenset(fold_words("de en"))
_AMOUNT_WORDS = frozenset(fold_words("cuanto cuanta cuantos cuantas"))
_SAME_PHRASE = frozenset({("can", "i"), ("could", "i"), ("may", "i"), ("is", "it", "possible", "to")})

# Question frames of the same meaning (folded token phrases; "what's" folds to "what", "whats" is expanded to it):
# each class's phrases are read as one marker, longest first, and a near copy whose edits were refused is served
# when, so read, it is a near copy with harmless edits only ("How do I renew my lease?" / "What do I do to renew my
# lease?"). First-person or impersonal frames only, never "we" / "you" for "I" (whose); no obligation ("have to",
# "should"), no quantifying adverb ("usually"), no preposition. Measured class by class on the five tuning files
# (benchmarks/README.md): each admits 1-4 paraphrases and no negative; the classes that admitted nothing
# ("I want to" / "I'd like to", "can you tell me", "¿me puede decir?", fillers such as "actually") were left out.
FRAMES: dict[str, tuple[str, ...]] = {
    "how_to": ("how do i", "how can i", "how could i", "how would i", "what do i do to", "what do i have to do to",
               "what do i need to do to", "what is the way to", "what the way to", "is there a way to",
               "is there any way to"),
    "permission": ("can i", "could i", "may i", "is it possible to", "is it possible for me to", "am i allowed to",
                   "am i able to"),
    "permission_es": ("puedo", "podria", "es posible", "seria posible", "se puede", "me dejan", "me permiten"),
    "which": ("what", "which"),
    # the asker's own ("my", "our") is the definite one they ask about: "Can I get a copy of the / my lease?",
    # "How do I reset my / the password?" (tuning files, 2026-12-04: 8 paraphrases, no negative); never "your"
    "demonstrative": ("the", "this", "that", "my", "our"),
}  # fmt: skip
ENABLED_FRAMES: tuple[str, ...] = tuple(FRAMES)


@lru_cache(maxsize=64)
def _frame_table(enabled: tuple[str, ...]) -> list[tuple[tuple[str, ...], str]]:
    table = [(tuple(phrase.split()), f"<{name}>") for name in enabled for phrase in FRAMES[name]]
    return sorted(table, key=lambda row: -len(row[0]))


def frames(words: tuple[str, ...], enabled: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """``words`` with each question frame of ``FRAMES`` read as its class's marker, longest first."""
    table = _frame_table(ENABLED_FRAMES if enabled is None else enabled)
    out: list[str] = []
    index = 0
    while index < len(words):
        for phrase, marker in table:
            if words[index : index + len(phrase)] == phrase:
                out.append(marker)
                index += len(phrase)
                break
        else:
            out.append(words[index])
            index += 1
    return tuple(out)


# "whats" (no apostrophe) is read as "what's", which the folding reads as "what".
_EXPANSIONS = {
    "whats": ("what",),
    "cannot": ("can", "not"),
    "can't": ("can", "not"),
    "won't": ("will", "not"),
    "i'm": ("i", "am"),
}
_SUFFIXES = (("n't", ("not",)), ("'re", ("are",)), ("'ve", ("have",)), ("'ll", ("will",)), ("'d", ("would",)))


def tokens(text: str) -> tuple[str, ...]:
    """The folded word tokens with contractions expanded: "can't" and "cannot" are "can not"."""
    out: list[str] = []
    for word in features(text).tokens:
        if word in _EXPANSIONS:
            out.extend(_EXPANSIONS[word])
            continue
        for suffix, expansion in _SUFFIXES:
            if word.endswith(suffix) and len(word) > len(suffix):
                out.append(word[: -len(suffix)])
                out.extend(expansion)
                break
        else:
            out.append(word)
    return tuple(out)


def _strip_fillers(words: tuple[str, ...]) -> tuple[str, ...]:
    out: list[str] = []
    index = 0
    while index < len(words):
        phrase = next((p for p in _FILLER_PHRASES if words[index : index + len(p)] == p), None)
        if phrase is not None:
            index += len(phrase)
            continue
        if words[index] not in _FILLERS and words[index] not in _ARTICLES:
            out.append(words[index])
        index += 1
    return tuple(out)


def harmless(old: tuple[str, ...], new: tuple[str, ...], before: str | None, after: str | None) -> bool:
    """Whether replacing the span ``old`` with ``new`` (between the words ``before`` and ``after``, None at an
    end) is one of the edits that cannot change the answer (the classes are in the module docstring)."""
    if (_INDEFINITE.intersection(old) and _POSSESSIVE.intersection(new)) or (
        _POSSESSIVE.intersection(old) and _INDEFINITE.intersection(new)
    ):
        return False  # one's own thing against any one (see ``_INDEFINITE``)
    old, new = _strip_fillers(old), _strip_fillers(new)
    if before is None:
        old, new = _strip_greeting(old), _strip_greeting(new)
    if before == "you":
        old, new = _strip_guys(old), _strip_guys(new)
    if old == new:
        return True  # fillers and articles only
    if not old or not new:
        added = old or new
        if added == ("is",):
            return before in _CONTRACTED_IS
        if added == ("any",) and before == "there":
            return True
        if added == ("at", "all") and after is None:
            return True
        return before is None and len(added) == 1 and added[0] in _FRONTED and after in _AMOUNT_WORDS
    if old in _SAME_PHRASE and new in _SAME_PHRASE:
        return True
    if before == "there" and {old, new} <= {("any",), ("a",), ("an",)}:
        return True
    if _infinitive_or_gerund(old, new) or _infinitive_or_gerund(new, old):
        return True
    if len(old) == len(new) == 1:
        x, y = old[0], new[0]
        if any(x in group and y in group for group in _SAME_WORDS) or _same_spelling(x, y) or _same_number(x, y):
            return True
        if before is None and any(x in group and y in group for group in _AGREEMENT):
            return True  # the opening auxiliary of a question
        if same_thing(x, y):
            return True  # "sell my house / my home", "the realtor / the agent": one thing in the guards' lexicons
        if synonym(x, y):
            return True  # "big" / "spacious", "price" / "cost", "depa" / "departamento": ``synonyms``
        if before in _INCLUDED and {x, y} == _INCLUDED_WITH:
            return True
        return any(
            x in group and y in group and (first is None or before in first) and after in then
            for group, first, then in _SAME_AUXILIARY
        )
    if len(old) == len(new) == 2 and all(x == y or synonym(x, y) for x, y in zip(old, new, strict=True)):
        return True  # two adjacent words, each the other's synonym ("big apartment" / "spacious flat")
    return _modal_of_the_same_verb(old, new) or _modal_of_the_same_verb(new, old)


def _infinitive_or_gerund(old: tuple[str, ...], new: tuple[str, ...]) -> bool:
    """ "a fee to break the lease" / "a fee for breaking the lease", "the deadline to submit" / "for submitting"."""
    if len(old) != 2 or len(new) != 2 or old[0] != "to" or new[0] != "for" or not new[1].endswith("ing"):
        return False
    verb, gerund = old[1], new[1][:-3]
    return len(verb) >= 3 and gerund in (verb, verb[:-1], verb + verb[-1])


def _same_spelling(x: str, y: str) -> bool:
    """British and American spellings of one word: neighbourhood / neighborhood, organise / organize, centre /
    center, cancelled / canceled, analyse / analyze."""
    for british, american in (("our", "or"), ("ise", "ize"), ("isation", "ization"), ("yse", "yze"), ("tre", "ter"),
                              ("lled", "led"), ("lling", "ling")):  # fmt: skip
        for a, b in ((x, y), (y, x)):
            if british in a and a.replace(british, american, 1) == b and len(b) >= 5:
                return True
    return False


def _same_number(x: str, y: str) -> bool:
    """One number in digits and in words: "30 days" / "thirty days" (the numbers guard compares their values)."""
    digits, words = (x, y) if x[:1].isdigit() else (y, x)
    value = _NUMBER_WORDS.get(words)
    return digits.isdigit() and value is not None and float(digits) == float(value) and words not in _SOFT_NUMBERS


def _strip_greeting(words: tuple[str, ...]) -> tuple[str, ...]:
    return words[1:] if words[:1] and words[0] in _OPENING_GREETINGS else words


def _strip_guys(words: tuple[str, ...]) -> tuple[str, ...]:
    return words[1:] if words[:1] == ("guys",) else words


def _modal_of_the_same_verb(old: tuple[str, ...], new: tuple[str, ...]) -> bool:
    """ "¿Cómo cambio mi plan?" / "¿Cómo puedo cambiar mi plan?": a first-person present and "puedo" with the same
    regular verb's infinitive (cambi-o / cambi-ar, descarg-o / descarg-ar)."""
    if len(old) != 1 or len(new) != 2 or new[0] != "puedo":
        return False
    verb, infinitive = old[0], new[1]
    return infinitive.endswith(("ar", "er", "ir")) and len(infinitive) > 4 and infinitive[:-2] + "o" == verb


def _bad_edit(a: tuple[str, ...], b: tuple[str, ...], max_edits: int) -> tuple[bool, str | None]:
    """Whether ``b`` is a near copy of ``a``, and its first edit that is not harmless (None: all harmless)."""
    codes = SequenceMatcher(None, [stem(w) for w in a], [stem(w) for w in b], autojunk=False).get_opcodes()
    edits = [code for code in codes if code[0] != "equal"]
    shared = sum(i2 - i1 for tag, i1, i2, _, _ in codes if tag == "equal")
    if len(edits) > max_edits or shared < MIN_SHARED[len(edits)] * min(len(a), len(b)):
        return False, None
    for tag, i1, i2, j1, j2 in codes:
        old, new = a[i1:i2], b[j1:j2]
        if tag == "equal":
            if old != new:  # the same stem in another form: a plural ("invoice" / "invoices")
                return True, next(f"{x} -> {y}" for x, y in zip(old, new, strict=True) if x != y)
        elif not harmless(old, new, a[i1 - 1] if i1 > 0 else None, a[i2] if i2 < len(a) else None):
            return True, f"{' '.join(old) or '-'} -> {' '.join(new) or '-'}"
    return True, None


def _moved(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """``b`` is ``a`` with one block of words moved elsewhere ("How long does shipping take to Canada?" / "How long
    does shipping to Canada take?", "¿Está amueblado el departamento?" / "¿El departamento está amueblado?")."""
    if a == b or len(a) != len(b) or sorted(a) != sorted(b) or len(a) > 30:
        return False
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n + 1):
            block, rest = a[i:j], a[:i] + a[j:]
            for k in range(len(rest) + 1):
                if k != i and rest[:k] + block + rest[k:] == b:
                    return True
    return False


def near_copy(
    stored: str, asked: str, *, max_edits: int = MAX_EDITS, enabled: tuple[str, ...] | None = None
) -> str | None:
    """The edit of a near copy that is not harmless ("all -> some"), or None (not a near copy, or only harmless
    edits, once its question frames are read as one: ``frames``)."""
    a, b = tokens(stored), tokens(asked)
    if not a or not b:
        return None
    if _moved(a, b):
        return None  # the same words, one block moved: the order guards (``structure``) read what a move changes
    _, bad = _bad_edit(a, b, max_edits)
    if bad is None:
        return None
    fa, fb = frames(a, enabled), frames(b, enabled)
    if (fa, fb) != (a, b) and fa and fb:
        framed_copy, framed_bad = _bad_edit(fa, fb, max_edits)
        if framed_copy and framed_bad is None:
            return None  # the same question in another frame ("how do I" / "what do I do to")
    return bad
