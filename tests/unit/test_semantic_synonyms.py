"""The near-copy check's synonym lexicon (``semantic_cache.synonyms``): a near copy whose only edit is a content word
swapped for its synonym is served, and no pair of the lexicon is one the guards' lexicons tell apart."""

from __future__ import annotations

import pytest

from clawback.pipeline.semantic_cache.edits import near_copy
from clawback.pipeline.semantic_cache.guards import distinguishes
from clawback.pipeline.semantic_cache.synonyms import pairs, synonym


def test_no_pair_of_the_lexicon_is_one_the_guards_tell_apart():
    joined = pairs()
    assert len(joined) > 100
    assert [pair for pair in joined if distinguishes(*pair)] == []


def test_the_guards_lexicons_tell_apart_what_a_synonym_must_not_join():
    assert distinguishes("buy", "sell") and distinguishes("fee", "deposit") and distinguishes("invoice", "receipt")
    assert distinguishes("landlord", "tenant") and not distinguishes("big", "large")
    assert not synonym("big", "small") and not synonym("fee", "deposit") and not synonym("big", "big")


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Is the kitchen big enough for a family?", "Is the kitchen spacious enough for a family?"),
        ("What is the price of parking?", "What is the cost of parking?"),
        ("Is smoking allowed in the building?", "Is smoking permitted in the building?"),
        ("How do I cancel my subscription?", "How do I terminate my subscription?"),
        ("¿Se renta el depa amueblado?", "¿Se renta el departamento amueblado?"),
        ("¿Puedo pagar la renta con tarjeta?", "¿Puedo pagar el alquiler con tarjeta?"),
        ("Is the big apartment available?", "Is the spacious flat available?"),  # two adjacent words
    ],
)
def test_a_synonym_swap_is_a_harmless_edit(stored, asked):
    assert near_copy(stored, asked) is None


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Is the kitchen big?", "Is the kitchen small?"),  # an antonym
        ("Is there a fee for parking?", "Is there a deposit for parking?"),  # two members of one contrast family
        ("Is the apartment big?", "Are the apartments spacious?"),  # a plural stays a number edit
        ("What is the rent?", "What is the lease?"),  # the payment and the contract: not in the lexicon
    ],
)
def test_what_the_lexicon_does_not_join_is_still_refused(stored, asked):
    assert near_copy(stored, asked) is not None
