"""Verification of a candidate by its edit: a near copy of the stored question that changes a content word is refused.

Why: the hard negatives that reach the threshold are, almost all, the stored question with one span edited:
"Is the pool *heated* in winter?" / "Is the pool *open* in winter?", "20 degrees *celsius*" / "*fahrenheit*",
"my trial *ends*" / "*ended*", "30 days" / "30 *business* days", "how do I *enforce*" / "how do I *stop
enforcing*", "¿por qué *subió*?" / "¿por qué *bajó*?". Everything the two questions share weighs for them in a
sentence embedding, so the one word that changes the answer is outvoted (0.86-0.98 above). Word lists name such
words class by class and the next writer uses another word; neither the model's contextual token vectors nor its
word vectors tell a synonym from a sibling either (measured: "ends" / "ended" align at 0.85 in context, "big" /
"spacious" at 0.73; ``benchmarks/README.md``). What does carry across writers is the shape: a paraphrase is
worded anew, a near miss is a near copy. So the check reads the edit, not the words:

- both questions as folded word tokens, in order (``guards.features``);
- their alignment (``difflib``): at most ``MAX_EDITS`` changed spans (replaced, inserted or deleted words), and the
  unchanged words at least ``MIN_SHARED`` of the shorter question;
- such a near copy is refused when a changed span holds a content word (``alignment.is_content``: not a function
  word, not a number: numbers have their own guard). A span of function words alone ("I need to" / "I have
  to") passes.

A reworded paraphrase (most of them: in order, a median of 30-43 % of the shorter question's words kept, per
corpus file) is not a near copy and goes through the other checks as before. The cost is the paraphrase that
swaps one word for a synonym in an otherwise copied sentence ("big" / "spacious"): refused, a paid call instead
of a hit. A miss costs one call; a wrong hit a wrong answer. No word list of any false-hit class is read. Cheap
(an alignment of two short token lists: ~10 us), so it runs before the word alignment, which may embed words.
"""

from __future__ import annotations

from difflib import SequenceMatcher

from clawback.pipeline.semantic_cache.alignment import is_content
from clawback.pipeline.semantic_cache.guards import features

__all__ = ["MAX_EDITS", "MIN_SHARED", "near_copy"]

MAX_EDITS = 1
MIN_SHARED = 0.5


def near_copy(stored: str, asked: str, *, max_edits: int = MAX_EDITS, min_shared: float = MIN_SHARED) -> str | None:
    """The content word a near copy changes, or None (not a near copy, or only function words changed)."""
    a, b = features(stored).tokens, features(asked).tokens
    if not a or not b:
        return None
    codes = SequenceMatcher(None, a, b, autojunk=False).get_opcodes()
    edits = [code for code in codes if code[0] != "equal"]
    if not edits or len(edits) > max_edits:
        return None
    shared = sum(i2 - i1 for tag, i1, i2, _, _ in codes if tag == "equal")
    if shared < min_shared * min(len(a), len(b)):
        return None
    for _, i1, i2, j1, j2 in edits:
        for word in (*a[i1:i2], *b[j1:j2]):
            if is_content(word):
                return word
    return None
