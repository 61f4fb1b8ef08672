"""A curated synonym lexicon for the near-copy check: a near copy whose only edit is a content word swapped for its
synonym ("Is the apartment *big* / *spacious*?", "What is the *price* / *cost* of parking?", "¿Se renta el
*depa* / *departamento*?") asks the same question, so the swap is a harmless edit (``edits.harmless``).

Why a lexicon: the near-copy check refuses any reworded content word by design (a changed word is how most hard
negatives differ), and the paraphrases it refuses on the tuning files are mostly near copies with one content word
reworded. Why a hand-written one: no synonym resource usable offline ships on PyPI ready to read. Of the 133 lines
of ``/work/.library/env/packages/pypi.tsv`` matching "wordnet" or "synonym" (2026-12-04), the maintained readers
(``wn``, ``nltk``) download their data in a separate step (``wn.download``, ``nltk.download``), the rest are other
languages (Bengali, Chinese, Bangla, African wordnets), web APIs (Datamuse, thesaurus services) or unvetted
one-author bundles; and a WordNet synset is far too broad for answers (it holds "rent" / "tear", "big" / "heavy",
"charge" / "accuse"). What serves an answer must be vocabulary a newcomer would agree means the same in real-estate
and software-support questions, English and Spanish.

Rules of the lexicon:
- general vocabulary only, word forms listed (no stemmer guesses): a plural is its own group, so "apartments" /
  "flat" stays a number edit, which the near-copy check refuses;
- never a pair the guards' lexicons tell apart (``guards.distinguishes``: an antonym pair's two sides, two members of
  one contrast family such as "fee" / "deposit" or "invoice" / "receipt", two roles, units or dates); ``synonym``
  checks it on every call and a unit test on every pair of the lexicon;
- no word whose other sense changes the answer in these domains: not "rent" / "lease" as nouns (the payment and the
  contract), not "cuarto" (also a quarter), not "get" / "receive", not "end" (the guards hold "start" / "end").
"""

from __future__ import annotations

from functools import lru_cache
from itertools import combinations

from clawback.pipeline.semantic_cache.guards import distinguishes, fold_words

__all__ = ["SYNONYMS", "pairs", "synonym"]

# One group a line: words of one meaning in these domains, each inflection its own group.
_GROUPS = (
    # size and price
    "big large spacious roomy", "bigger larger roomier", "biggest largest",
    "price cost", "prices costs", "fee charge", "fees charges",
    # homes
    "apartment flat unit", "apartments flats units", "photo picture pic", "photos pictures pics",
    "fridge refrigerator", "fridges refrigerators",
    # buying and leasing (the nouns "rent" / "lease" differ: the payment, the contract)
    "buying purchasing", "bought purchased", "renting leasing", "rented leased",
    # beginning and ending an agreement
    "start begin", "starts begins", "started began", "starting beginning",
    "cancel terminate", "cancels terminates", "cancelled canceled terminated", "cancelling canceling terminating",
    "cancellation termination",
    # permission
    "allow permit", "allows permits", "allowed permitted",
    # software support
    "create generate", "creates generates", "created generated",
    "delete remove", "deletes removes", "deleted removed", "deleting removing",
    "choose select pick", "chose selected picked", "fix repair", "fixed repaired", "fixing repairing",
    "issue problem", "issues problems", "recommend suggest", "recommended suggested",
    "recommendation suggestion", "recommendations suggestions", "contact reach", "help assist",
    "refund reimbursement", "refunds reimbursements",
    # Spanish: homes, size, price
    "piso apartamento departamento depa depto", "pisos apartamentos departamentos depas deptos",
    "alquiler renta arriendo", "alquileres rentas arriendos", "alquilar rentar arrendar",
    "alquila renta arrienda", "alquilan rentan arriendan",
    "grande amplio espacioso", "grandes amplios espaciosos", "amplia espaciosa", "amplias espaciosas",
    "precio costo coste", "precios costos costes", "foto imagen", "fotos imagenes",
    "refrigerador nevera refri heladera", "refrigeradores neveras",
    # Spanish: agreements, support
    "empezar comenzar iniciar", "empieza comienza inicia", "empiezan comienzan inician",
    "cancelar anular", "cancelo anulo", "cancela anula", "cancelado anulado", "cancelada anulada",
    "eliminar borrar", "elimino borro", "elimina borra", "eliminado borrado", "eliminada borrada",
    "elegir escoger seleccionar", "arreglar reparar", "arreglan reparan", "arreglo reparo", "arregla repara",
    "recomendar sugerir", "recomiendan sugieren", "recomiendas sugieres", "recomienda sugiere",
    "crear generar", "contrasena clave", "problema inconveniente", "problemas inconvenientes",
)  # fmt: skip

SYNONYMS: tuple[frozenset[str], ...] = tuple(frozenset(fold_words(group)) for group in _GROUPS)
"""The lexicon, folded (accents and case gone, as the near-copy check's tokens are)."""


@lru_cache(maxsize=1)
def _index() -> dict[str, frozenset[int]]:
    index: dict[str, set[int]] = {}
    for number, group in enumerate(SYNONYMS):
        for word in group:
            index.setdefault(word, set()).add(number)
    return {word: frozenset(numbers) for word, numbers in index.items()}


def synonym(x: str, y: str) -> bool:
    """Whether two different folded words are one group's synonyms and no guard lexicon tells them apart."""
    if x == y:
        return False
    index = _index()
    return bool(index.get(x, frozenset()) & index.get(y, frozenset())) and not distinguishes(x, y)


def pairs() -> list[tuple[str, str]]:
    """Every pair of words the lexicon joins (for the test that no guard lexicon tells one apart)."""
    return sorted({(x, y) for group in SYNONYMS for x, y in combinations(sorted(group), 2)})
