"""The near-copy check (``semantic_cache.edits``) on real pairs of the shipped corpus, without the model: a near copy
is served only when its edit is in the closed class of harmless edits. The blind files' wrong hits that every
word-list guard let through (content words, then quantifiers, tenses, scopes, particles, a negation) are refused,
reworded paraphrases are not near copies, and the harmless edits pass."""

from __future__ import annotations

import pytest

from clawback.config import SemanticGuards
from clawback.pipeline.semantic_cache.edits import FRAMES, frames, harmless, near_copy, tokens
from clawback.pipeline.semantic_cache.evaluate import TUNING_SPLITS, Pair, corpus_path, load_pairs
from clawback.pipeline.semantic_cache.guards import check


def _pair(split: str, a: str, same: bool) -> Pair:
    found = [p for p in load_pairs(corpus_path(split)) if p.a == a and p.same is same]
    assert len(found) == 1, a
    return found[0]


# holdout2.jsonl's wrong hits with the guards of 2026-12-03 and holdout.jsonl's last one (content words), then
# holdout3.jsonl's with the content-word near-copy check of 2026-12-04 (function words; benchmarks/README.md):
# each passed every word-list guard; the edit named is the first one not in the harmless class
@pytest.mark.parametrize(
    ("split", "a", "edit"),
    [
        ("holdout2", "my rate lock is 30 days, can I extend it", "- -> business"),
        ("holdout2", "my trial ends on the 12th, what happens", "ends -> ended"),
        ("holdout2", "set the thermostat to 20 degrees celsius", "celsius -> fahrenheit"),
        ("holdout2", "¿por qué subió mi pago de hipoteca?", "subio -> bajo"),
        ("holdout", "Is the pool heated in winter?", "heated -> open"),
        ("holdout3", "Were all my files deleted?", "all -> some of"),
        ("holdout3", "Are all units pet friendly?", "all -> some"),
        ("holdout3", "Did every item ship?", "every -> any"),
        ("holdout3", "Is the entire deposit returned?", "- -> half"),  # two spans: "half" in, "entire" out
        ("holdout3", "¿Todos los departamentos tienen balcón?", "todos los -> algun"),
        ("holdout3", "Did the HOA raise fees?", "did -> will"),
        ("holdout3", "Was the house ever tented for termites?", "was -> is"),
        ("holdout3", "¿Ya se firmó el contrato de compraventa?", "ya -> cuando"),
        ("holdout3", "Turn off notifications for this project", "this -> every"),
        ("holdout3", "Can I move in early?", "in -> out"),
        ("holdout3", "¿Se aceptan perros?", "- -> no"),
        ("holdout3", "Cuánto tarda el reembolso a la tarjeta", "- -> como saldo"),
        ("holdout3", "What's my credit score requirement for this lender?", "my -> are the"),
    ],
)
def test_the_blind_files_wrong_hits_are_near_copies_it_refuses(split, a, edit):
    pair = _pair(split, a, same=False)
    # no word-list guard refuses it (the tense guard, written later, refuses "did -> will" as well)
    assert check(pair.a, pair.b, SemanticGuards(tense=False)) is None
    assert near_copy(pair.a, pair.b) == edit


@pytest.mark.parametrize(
    ("split", "a"),
    [
        ("holdout", "What are your office hours?"),  # reworded: not a near copy
        ("calibration", "I need to cancel my appointment."),  # "need to" / "have to": a harmless auxiliary
    ],
)
def test_reworded_paraphrases_and_harmless_edits_pass(split, a):
    pair = _pair(split, a, same=True)
    assert near_copy(pair.a, pair.b) is None


def test_the_closed_class_of_harmless_edits():
    # case, accents, punctuation (folded away), fillers, articles, contractions, same-meaning auxiliaries
    assert near_copy("¿Cuándo abre la oficina?", "cuando abre la oficina") is None
    assert near_copy("Can I pay rent online?", "Hi, can I pay the rent online please?") is None
    assert near_copy("¿Aceptan mascotas?", "Hola, ¿aceptan mascotas por favor?") is None
    assert near_copy("What's the pet fee?", "What is the pet fee?") is None
    assert near_copy("Can I pay rent online?", "Could I pay rent online?") is None
    assert near_copy("Can I pay rent online?", "Is it possible to pay rent online?") is None
    assert near_copy("How do I reset my password?", "How can I reset my password?") is None
    # and what is outside it, function word or not
    assert near_copy("Can I pay rent online?", "Can't I pay rent online?") == "- -> not"
    assert near_copy("I can't pay rent online", "I cannot pay rent online") is None  # both "can not"
    assert near_copy("Can I pay my rent online?", "Can I pay your rent online?") == "my -> your"
    assert near_copy("Can I pay rent online?", "Will I pay rent online?") == "can -> will"
    assert near_copy("Is the invoice paid?", "Are the invoices paid?") == "invoice -> invoices"
    assert near_copy("Do you allow dogs?", "Do you allow more dogs?") == "- -> more"
    assert near_copy("Is the pool open at 9?", "Is the pool open at 10?") == "9 -> 10"
    assert near_copy("Is the apartment furnished?", "Is the apartment unfurnished?") == "furnished -> unfurnished"
    # the cost: a paraphrase that keeps the sentence and rewords a content span is a paid call
    assert near_copy("Is the pool heated?", "Is the pool warm?") == "heated -> warm"


def test_harmless_reads_the_context_of_an_auxiliary():
    assert harmless(("do",), ("can",), "how", "i")
    assert not harmless(("do",), ("can",), None, "i")  # "Do I pay?" / "Can I pay?" asks another thing
    assert harmless(("need",), ("have",), "i", "to")
    assert not harmless(("need",), ("have",), "i", "a")  # "I need a key" / "I have a key"
    assert harmless((), ("is",), "what", "the")  # "what's" folds to "what"
    assert not harmless((), ("was",), "what", "the")
    assert tokens("I'm sure you won't") == ("i", "am", "sure", "you", "will", "not")


def test_it_refuses_near_copies_and_leaves_reworded_paraphrases_to_the_other_checks():
    pairs = [p for split in TUNING_SPLITS for p in load_pairs(corpus_path(split))]
    paraphrases = [p for p in pairs if p.same]
    negatives = [p for p in pairs if not p.same and check(p.a, p.b, SemanticGuards()) is None]
    refused_paraphrases = sum(near_copy(p.a, p.b) is not None for p in paraphrases)
    refused_negatives = sum(near_copy(p.a, p.b) is not None for p in negatives)
    # measured 2026-12-04 on the four tuning files: 225 of 1,232 paraphrases (18.3 %, at any similarity), 241 of
    # the 263 negatives the word-list guards let through (91.6 %); on the seven tuning files (holdout6 added, whose
    # writer reworded by near copies: 86 of its 250 paraphrases), 480 of 2,082 (23.1 %) and 526 of 581 (90.5 %)
    assert refused_paraphrases / len(paraphrases) < 0.25
    assert refused_negatives / len(negatives) > 0.85


# Question frames of the same meaning (``edits.FRAMES``), each class on a real tuning pair it admits (2026-12-04).
@pytest.mark.parametrize(
    ("frame", "split", "a"),
    [
        ("how_to", "calibration", "How do I renew my lease?"),  # "What do I do to renew my lease?"
        ("permission", "holdout4", "Can I paint the walls?"),  # "Am I allowed to paint the walls?"
        ("permission_es", "holdout4", "¿Puedo agendar una visita para mañana?"),  # "¿Podría agendar ...?"
        ("which", "holdout4", "What documents do I need to apply?"),  # "Which documents ...?"
        ("demonstrative", "holdout4", "Does the house have a garage?"),  # "Does this house have a garage?"
    ],
)
def test_each_frame_class_admits_its_paraphrase_and_only_through_that_class(frame, split, a):
    pair = _pair(split, a, same=True)
    assert near_copy(pair.a, pair.b) is None
    assert near_copy(pair.a, pair.b, enabled=tuple(n for n in FRAMES if n != frame)) is not None


def test_frames_keep_what_changes_the_answer():
    assert frames(("how", "do", "i", "renew")) == frames(("is", "there", "a", "way", "to", "renew"))
    # another person, an obligation, a quantifier or a preposition is still an edit that refuses
    assert near_copy("How do I renew my lease?", "How do we renew our lease?") is not None
    assert near_copy("Can I paint the walls?", "Do I have to paint the walls?") is not None
    assert near_copy("Can I paint the walls?", "Am I required to paint the walls?") is not None
    assert near_copy("Does the house have a garage?", "Does every house have a garage?") is not None
    assert near_copy("How do I move in early?", "What do I do to move out early?") is not None
    assert near_copy("¿Puedo agendar una visita?", "¿Debo agendar una visita?") is not None


def test_whats_without_its_apostrophe_is_whats():
    assert tokens("Whats your refund policy?") == tokens("What's your refund policy?")
    assert near_copy("What is your refund policy?", "Whats your refund policy?") is None


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Can I get a copy of the lease?", "Can I get a copy of my lease?"),  # the asker's own is the definite one
        ("How do I add a seat to my team?", "How do I add a seat to our team?"),
        ("Where can I find my invoices?", "Where do I find my invoices?"),  # after a question word
        ("Who do I contact for repairs?", "Who should I contact for repairs?"),
        ("Do you offer a free trial?", "Do you guys offer a free trial?"),
        ("Hola, ¿sigue disponible la casa?", "Buenas, ¿sigue disponible la casa?"),  # a greeting at the start
        ("¿Cuánto es el depósito de garantía?", "¿De cuánto es el depósito de garantía?"),
        ("¿Dónde descargo mis facturas?", "¿Dónde puedo descargar mis facturas?"),  # the same verb with "puedo"
        ("Is the neighbourhood quiet?", "Is the neighborhood quiet?"),  # British / American spelling
        ("Can I cancel within 30 days?", "Can I cancel within thirty days?"),  # digits / words, one value
        ("When is rent due each month?", "When is rent due every month?"),
        ("Is parking included in the rent?", "Is parking included with the rent?"),
        ("can I sell my house as is?", "Is it possible to sell my home as-is?"),  # one member of a guards' set
        ("How long does shipping take to Canada?", "How long does shipping to Canada take?"),  # a block moved
        ("¿Está amueblado el departamento?", "¿El departamento está amueblado?"),
        ("Can I pay my rent online?", "Can I pay rent online?"),  # the asker's own, dropped as an article
        ("Is there storage space?", "Is there any storage space?"),
        ("Do you ship internationally?", "Do you ship internationally at all?"),
        ("Is there a fee to break the lease?", "Is there a fee for breaking the lease?"),
        ("What time is the open house?", "What time's the open house?"),
        ("Hi there, what's the asking price?", "What is the asking price?"),
        ("Can I see 42 Oak Avenue on Saturday?", "Could I view 42 Oak Ave on Saturday?"),
        ("Is utilities included in the rent?", "Are utilities included in the rent?"),  # nine files: agreement
        ("Does your team work weekends?", "Do your team work weekends?"),
    ],
)
def test_harmless_edits_learned_on_the_seven_tuning_files(stored, asked):
    """Each class admitted paraphrases of the tuning files and no negative (2026-12-04, seven files)."""
    assert near_copy(stored, asked) is None


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Can I get a copy of my lease?", "Can I get a copy of your lease?"),  # whose: never "your"
        ("Do I need to enable 2FA?", "Should I enable 2FA?"),  # no question word: an obligation is no advice
        ("Can I use the pool?", "Do I use the pool?"),
        ("¿Hay buenas escuelas cerca?", "¿Hay escuelas cerca?"),  # "buenas" inside a question is "good"
        ("Do they offer a free trial?", "Do they guys offer a free trial?"),
        ("¿Cuánto es el depósito?", "¿Cuánto es el depósito en efectivo?"),  # "en" that is not fronting
        ("¿Dónde descargo mis facturas?", "¿Dónde puedo subir mis facturas?"),  # another verb
        ("Can I cancel within 30 days?", "Can I cancel within thirteen days?"),
        ("Is the unit overpriced?", "Is the unit underpriced?"),  # one letter pattern is no spelling variant
        ("Is parking in the garage?", "Is parking with the garage?"),  # "in" / "with" only after "included"
        ("Can I see the house?", "Can I rent the house?"),  # another member, or no member
        ("Does the house have a bedroom?", "Does the house have bedrooms?"),  # a plural is still an edit
        ("Can I pay my rent online?", "Can I pay your rent online?"),  # whose
        ("Are there any fees?", "Are any fees refundable?"),
        ("Is there a fee to break the lease?", "Is there a fee for signing the lease?"),
        ("Do you ship internationally?", "Do you ship at all internationally?"),  # "at all" only closing it
        ("Is the invoice refundable?", "Are the invoices refundable?"),  # agreement, but the subject's number changed
        ("Where is the key?", "Where are the key?"),  # agreement only opening the question
        ("Is the deposit refundable?", "Was the deposit refundable?"),  # another tense is no agreement
    ],
)
def test_the_new_harmless_classes_keep_what_changes_the_answer(stored, asked):
    assert near_copy(stored, asked) is not None


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("¿Cómo alquilo un piso?", "¿Cómo alquilo mi piso?"),  # holdout10's wrong hit: rent one / let one's own
        ("How do I sell a house?", "How do I sell my house?"),
        ("Can I insure an apartment?", "Can I insure my apartment?"),
    ],
)
def test_the_askers_own_thing_is_not_any_one(stored, asked):
    assert near_copy(stored, asked) is not None
    assert near_copy(asked, stored) is not None


def test_the_askers_own_thing_is_still_the_definite_one():
    assert near_copy("How do I reset the password?", "How do I reset my password?") is None
    assert near_copy("¿Cómo cancelo la suscripción?", "¿Cómo cancelo mi suscripción?") is None
    assert near_copy("Can I pay rent online?", "Can I pay my rent online?") is None
