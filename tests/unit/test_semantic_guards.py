"""The semantic cache's guards and hard partitions, without the model: each false-hit class is refused by its own
guard, true paraphrases pass every guard, and anything but the last user turn's text must match exactly."""

from __future__ import annotations

import pytest

from clawback.config import SemanticCacheSettings, SemanticGuards
from clawback.pipeline.context import RequestContext, Tenant
from clawback.pipeline.semantic_cache.calibration import choose_threshold
from clawback.pipeline.semantic_cache.guards import GUARD_NAMES, check
from clawback.pipeline.semantic_cache.partition import eligibility, partition_key
from clawback.pipeline.semantic_cache.verify import CHECK_NAMES

ALL = SemanticGuards()
NONE = SemanticGuards(**dict.fromkeys(SemanticGuards.model_fields, False))


@pytest.mark.parametrize(
    ("guard", "stored", "asked"),
    [
        ("negation", "Are pets allowed in the apartment?", "Are pets not allowed in the apartment?"),
        ("negation", "¿Se permiten mascotas?", "¿No se permiten mascotas?"),
        ("antonyms", "How do I enable two-factor authentication?", "How do I disable two-factor authentication?"),
        ("antonyms", "¿Compran casas de contado?", "¿Venden casas de contado?"),
        ("antonyms", "Is the apartment furnished?", "Is the apartment unfurnished?"),
        ("numbers", "I'm looking for a 3 bedroom house under $400k.", "I'm looking for a 3 bedroom house under $450k."),
        ("numbers", "Is the commission 3% or $3,000?", "Is the commission $3,000 or 3%?"),
        ("numbers", "I have two dogs.", "I have three dogs."),
        ("units", "Is the house 2,000 square feet?", "Is the house 2,000 square meters?"),
        ("units", "Is the HOA fee $200 per month?", "Is the HOA fee $200 per year?"),
        ("dates", "Can I see the house on Saturday?", "Can I see the house on Sunday?"),
        ("dates", "Is the office open the day after Thanksgiving?", "Is the office open on Thanksgiving?"),
        ("dates", "La prueba termina hoy.", "La prueba termina mañana."),
        ("entities", "Do you have homes for sale in Austin?", "Do you have homes for sale in Dallas?"),
        ("entities", "Is the Chestnut Street house for sale?", "Is the Chestnut Avenue house for sale?"),
        ("entities", "¿Laura es la asesora de la casa?", "¿Lucía es la asesora de la casa?"),
        ("roles", "Can the landlord evict the tenant?", "Can the tenant evict the landlord?"),
        ("roles", "Do I pay you the deposit?", "Do you pay me the deposit?"),
        ("roles", "Can my neighbor cut the tree on my side?", "Can I cut the tree on my neighbor's side?"),
        ("language", "What are your office hours?", "¿Cuál es el horario de su oficina?"),
        ("contrasts", "How many bedrooms does the house have?", "How many bathrooms does the house have?"),
        ("contrasts", "¿Tienen departamentos en venta?", "¿Tienen casas en venta?"),
        # revised on the calibration split (2026-12-03): what the relaxed rules must still refuse
        ("roles", "¿Le mando yo el contrato firmado?", "¿Usted me manda el contrato firmado?"),
        ("roles", "Is landlord insurance required?", "Is renters insurance required?"),
        ("units", "Is the rent $2,000 a month?", "Is the rent $2,000?"),
        ("units", "Is interest charged monthly?", "Is interest charged yearly?"),
        ("contrasts", "¿Cómo renuevo el contrato?", "¿Cómo traspaso el contrato?"),
        ("contrasts", "Can I change my plan?", "Can I share my plan?"),
        ("antonyms", "Do you have homes with at least 3 bedrooms?", "Do you have homes with at most 3 bedrooms?"),
        # issue 17 guards, general rules (written with holdout.jsonl as a tuning file; sentences are new ones)
        ("order", "Can the association fine a resident?", "Can a resident fine the association?"),
        ("order", "Does the bank pay interest to the customer?", "Does the customer pay interest to the bank?"),
        ("order", "List the homes from oldest to newest.", "List the homes from newest to oldest."),
        ("order", "If I invite a coworker, do we get a bonus?", "If a coworker invites me, do we get a bonus?"),
        ("focus", "How long does the appraisal take?", "How much does the appraisal cost?"),
        ("focus", "¿Cuánto tarda el avalúo?", "¿Cuánto cuesta el avalúo?"),
        ("focus", "How long is the rate lock valid?", "How long does the rate lock take?"),
        ("focus", "¿Qué cubre el seguro?", "¿Cuándo se paga el seguro?"),
        ("identifiers", "Should I write to help@casas.mx?", "Should I write to help@casasmx.com?"),
        ("identifiers", "Is the form on www.example.org/apply?", "Is the form on example.org/applications?"),
        ("antonyms", "What happens if the appraisal passes?", "What happens if the appraisal fails?"),
        ("antonyms", "¿Cómo subo mi oferta?", "¿Cómo bajo mi oferta?"),
        ("antonyms", "¿Cómo abro una cuenta?", "¿Cómo cierro una cuenta?"),
        ("antonyms", "Should we keep the financing contingency?", "Should we waive the financing contingency?"),
        ("antonyms", "Can I sublet my room to a student?", "Can I sublet a room from a student?"),
        ("units", "Is the lot 500 sq ft?", "Is the lot 500 sq m?"),
        ("units", "A 60 m2 studio", "A 60 ft2 studio"),
    ],
)
def test_each_false_hit_class_is_refused_by_its_guard(guard, stored, asked):
    assert check(stored, asked, NONE) is None  # nothing refuses it without guards: the threshold alone would serve it
    assert check(stored, asked, NONE.model_copy(update={guard: True})) == guard
    assert check(stored, asked, ALL) is not None


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("What are your office hours?", "When is your office open?"),
        ("Is the 1 bedroom on 5th Avenue still open?", "Is the one-bedroom on 5th Ave still available?"),
        ("Is the house at 301 Harbor Drive still on the market?", "Is 301 Harbor Dr still for sale?"),
        ("Are you open on Saturdays?", "Is the office open on Saturday?"),
        ("What are the monthly HOA dues for Sunset Villas?", "How much are the HOA dues per month at Sunset Villas?"),
        ("Busco una casa de 3 recámaras por $2,500,000.", "Estoy buscando casa de tres recámaras de $2,500,000."),
        ("Can I see the apartment before signing?", "Will I be able to view the unit before I sign the lease?"),
        ("¿Hay terrenos de al menos 500 metros cuadrados?", "¿Tienen terrenos de 500 metros cuadrados o más?"),
        ("Am I allowed to paint the walls?", "Can I paint the walls?"),
        # only "I" on one side, only "you" on the other: a request phrased either way
        ("can I get an invoice with my company name?", "Can you issue an invoice with my business name on it?"),
        ("Do you provide a moving checklist?", "Is there a move-in checklist I should fill out?"),
        ("Is renters insurance required?", "Do I need to have renters insurance?"),  # a policy, not an actor
        ("When is rent due each month?", "What day of the month is rent due?"),  # a rate said on one side only
        ("how much are utilities usually?", "What do utilities typically cost per month?"),
        ("We need at least 2 bathrooms.", "We're looking for a place with a minimum of 2 bathrooms."),
        # the structural guards: coordination, a moved clause, a subordinate "when", a duration asked as a time
        ("Do you sell houses and condos?", "Do you sell condos and houses?"),
        ("Before I buy, should I get an inspection?", "Should I get an inspection before I buy?"),
        ("How much notice do I give?", "What notice period applies when I want to move out?"),
        ("How long do refunds take?", "When will I see my refund?"),
        ("Is the unit 60 m2?", "Is the unit 60 square meters?"),
        ("Write to billing@acme.com", "Send it to billing@acme.com."),
    ],
)  # fmt: skip
def test_true_paraphrases_pass_every_guard(stored, asked):
    assert check(stored, asked, ALL) is None


def test_every_guard_is_a_setting():
    assert (
        {*GUARD_NAMES, "topic", "request", "near_copy", "alignment"}
        == set(CHECK_NAMES)
        == set(SemanticGuards.model_fields)
    )


def _ctx(body, key="k1", headers=()):
    return RequestContext("r", "messages", body, None, headers=list(headers), tenant=Tenant(key_id=key))


BASE = {"model": "claude-haiku-4-5", "max_tokens": 100, "temperature": 0, "system": "You answer for Acme Realty.",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                     {"role": "user", "content": "What are your office hours?"}]}  # fmt: skip


def _last(body, text):
    return {**body, "messages": [*body["messages"][:-1], {"role": "user", "content": text}]}


def test_only_the_last_user_turn_text_is_outside_the_partition():
    key = partition_key("k1", "k1", BASE, None)
    # the last turn's text, and its form (string or one text block), change nothing
    assert partition_key("k1", "k1", _last(BASE, "When is the office open?"), None) == key
    blocks = _last(BASE, [{"type": "text", "text": "When is it open?", "cache_control": {"type": "ephemeral"}}])
    assert partition_key("k1", "k1", blocks, None) == key
    changed = [
        partition_key("k2", "k2", BASE, None),  # another tenant
        partition_key("k1", "docs-v2", BASE, None),  # another namespace
        partition_key("k1", "k1", BASE, "some-beta-2026"),
        partition_key("k1", "k1", {**BASE, "model": "claude-sonnet-4-6"}, None),
        partition_key("k1", "k1", {**BASE, "system": "You answer for Other Realty."}, None),
        partition_key("k1", "k1", {**BASE, "temperature": 0.7}, None),
        partition_key("k1", "k1", {**BASE, "top_p": 0.5}, None),
        partition_key("k1", "k1", {**BASE, "max_tokens": 101}, None),
        partition_key("k1", "k1", {**BASE, "tools": [{"name": "search", "input_schema": {"type": "object"}}]}, None),
        partition_key("k1", "k1", {**BASE, "some_future_field": True}, None),
        partition_key(
            "k1", "k1", {**BASE, "messages": [{"role": "user", "content": "Hey"}, *BASE["messages"][1:]]}, None
        ),
    ]
    assert key not in changed and len(set(changed)) == len(changed)


def test_eligibility_never_embeds_what_it_must_not_compare():
    settings = SemanticCacheSettings(enabled=True)
    assert eligibility(_ctx(BASE), settings).mode == "on"
    assert eligibility(_ctx(BASE), settings).text == "What are your office hours?"
    assert eligibility(_ctx({**BASE, "temperature": 1}), settings).mode == "off"  # sampled: deterministic policy
    assert eligibility(_ctx({**BASE, "temperature": 1}, headers=[("x-clawback-cache", "on")]), settings).mode == "on"
    assert eligibility(_ctx(BASE, headers=[("x-clawback-cache", "off")]), settings).mode == "off"
    assert eligibility(_ctx(BASE, headers=[("x-clawback-cache", "refresh")]), settings).mode == "refresh"
    tool_result = _last(BASE, [{"type": "tool_result", "tool_use_id": "t1", "content": "42"},
                               {"type": "text", "text": "and now?"}])  # fmt: skip
    assert eligibility(_ctx(tool_result), settings).reason == "tool_result"
    allowed = settings.model_copy(update={"allow_tool_results": True})
    assert eligibility(_ctx(tool_result), allowed).mode == "on"
    image = _last(BASE, [{"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA=="}},
                         {"type": "text", "text": "what is this house?"}])  # fmt: skip
    assert eligibility(_ctx(image), settings).reason == "media"
    assert eligibility(_ctx({**BASE, "messages": BASE["messages"][:2]}), settings).reason == "no_text"
    assert eligibility(_ctx({**BASE, "max_tokens": 0}), settings).mode == "off"
    keyed = settings.model_copy(update={"keys": {"k1": False}, "default_policy": "all"})
    assert eligibility(_ctx(BASE), keyed).mode == "off"
    assert eligibility(_ctx(BASE, key="k2"), keyed).mode == "on"


def test_calibration_keeps_the_lowest_threshold_that_holds_precision():
    scored = [(0.99 - i * 0.01, True, True) for i in range(40)]  # 0.99 .. 0.60, all right
    scored += [(0.655, True, False), (0.95, False, False)]  # one wrong at 0.655; one refused by a guard
    chosen = choose_threshold(scored, target=0.99, min_served=20)
    assert chosen.wrong == 0 and abs(chosen.threshold - 0.66) < 1e-9 and chosen.served == 34
    loose = choose_threshold(scored, target=0.97, min_served=20)
    assert loose.wrong == 1 and loose.threshold < 0.655


def test_an_unknown_model_stops_start_up_with_the_setting_named():
    from clawback.config import ConfigError
    from clawback.pipeline.semantic_cache import SemanticCacheStage
    from clawback.pricing import load_price_book

    with pytest.raises(ConfigError, match=r"semantic_cache\.model: model 'no-such-model' .* nothing is downloaded"):
        SemanticCacheStage(SemanticCacheSettings(enabled=True, model="no-such-model"), load_price_book())


def _refused_only_by(split: str, stored: str, guard: str, asked: str | None = None) -> None:
    """The labelled negative stored as ``stored`` (asked as ``asked`` when given) in ``split`` is refused by ``guard``
    and by nothing else."""
    from clawback.pipeline.semantic_cache.evaluate import corpus_path, load_pairs
    from clawback.pipeline.semantic_cache.guards import check

    pair = next(p for p in load_pairs(corpus_path(split)) if p.a == stored and asked in (None, p.b))
    assert not pair.same
    assert check(pair.a, pair.b, SemanticGuards()) == guard
    assert check(pair.a, pair.b, SemanticGuards(**{guard: False})) is None


def test_the_same_content_words_with_a_person_moved_is_a_role_swap():
    """holdout4's reworded role swap (0.958): every content word kept, who complains changed (``reordered``)."""
    from clawback.pipeline.semantic_cache.guards import features
    from clawback.pipeline.semantic_cache.structure import reordered

    _refused_only_by("holdout4", "The tenant below me is complaining about my noise", "order")

    def swapped_roles(a: str, b: str) -> bool:
        return reordered(features(a).tokens, features(b).tokens)

    assert swapped_roles("My neighbor keeps calling me about the fence", "I keep calling my neighbor about the fence")
    # a question word fronts its object; a rewording that keeps the actor first; other content words
    assert not swapped_roles("How much do I need for a down payment?", "What down payment will I need?")
    assert not swapped_roles("I'm moving to Phoenix in August", "In August I'm moving to Phoenix")
    assert not swapped_roles("I'm moving to Phoenix with my kids", "My kids and I are relocating to Phoenix")


def test_shared_words_on_opposite_sides_of_a_relation_word_refuse():
    """holdout5's two word-order wrong hits (0.966, 0.977): the same words around "before" / "debajo", swapped."""
    from clawback.pipeline.semantic_cache.guards import clauses
    from clawback.pipeline.semantic_cache.structure import related_differently

    for stored in ("Should I get pre-approved before looking at houses?", "¿La cochera está debajo del departamento?"):
        _refused_only_by("holdout5", stored, "order")

    def flipped(a: str, b: str) -> bool:
        return related_differently(clauses(a), clauses(b))

    assert flipped("Is the storage unit above the garage?", "Is the garage above the storage unit?")
    assert flipped("Can I sign the lease before the inspection?", "Can I sign the lease after the inspection?")
    assert flipped("Move the listing from draft to published", "Move the listing from published to draft")
    # the same order said another way: a fronted clause, the converse word, a question word moved
    assert not flipped("Should I sell my house before buying?", "Before buying, should I sell my house?")
    assert not flipped("Is the garage below the unit?", "Is the unit above the garage?")
    assert not flipped("What does 'under contract' mean?", "A listing says under contract - what does that mean?")
    assert not flipped("Why is my invoice higher than usual?", "My invoice is higher than usual, why?")


def test_the_shared_words_negated_on_one_side_and_affirmed_on_the_other_refuse():
    """holdout5's 0.862 wrong hit: one negation each side (parity equal), but what is negated changed sides."""
    from clawback.pipeline.semantic_cache.guards import clauses
    from clawback.pipeline.semantic_cache.structure import negated_differently

    _refused_only_by("holdout5", "My card was charged, but I don't see the order.", "negation")

    # the same thing negated, in another clause order or said another way
    def negated(a: str, b: str) -> bool:
        return negated_differently(clauses(a), clauses(b), frozenset({"not", "no", "never"}))

    assert negated("My card was charged, but I don't see the order", "My order is there, but my card was not charged")
    assert not negated("I paid, but I can't see the receipt", "I can't see the receipt, but I paid")
    assert not negated("My card was charged, but I don't see the order", "I was charged and the order is not there")


@pytest.mark.parametrize(
    ("guard", "stored", "asked"),
    [
        ("choice", "Do I sign the lease first or pay the deposit first?", "After I pay the deposit, how do I sign?"),
        ("choice", "¿Primero firmo o pago la fianza?", "¿Cómo pago la fianza?"),
        ("choice", "In what order do I submit the forms?", "How do I submit the forms?"),
        ("time_relation", "Once I sign, how many days do I have to pay?", "Do I have to pay before I sign?"),
        ("time_relation", "Una vez firmado el contrato, ¿cuándo pago?", "¿Tengo que pagar antes de firmar?"),
        ("time_relation", "Can I move in after the inspection?", "Can I move in until the inspection?"),
        ("tense", "Has the rent gone up this year?", "Will the rent go up next year?"),
        ("tense", "Did they approve my application?", "Are they going to approve my application?"),
        ("tense", "¿Ya subió la renta?", "¿Va a subir la renta?"),
        ("tense", "¿Se aprobó mi solicitud?", "¿Se aprobará mi solicitud?"),
        ("agent", "Do I have to repair the fence?", "Does the landlord have to repair the fence?"),
        ("agent", "¿Cuánto tengo que pagar de depósito?", "¿Cuánto tiene que pagar el inquilino de depósito?"),
        ("agent", "Can I cancel the viewing?", "Can they cancel the viewing?"),
    ],
)  # fmt: skip
def test_each_grammatical_class_is_refused_by_its_guard(guard, stored, asked):
    """Choice, time relation, tense and agent (``structure``'s sibling ``grammar``): each alone refuses its class."""
    assert check(stored, asked, NONE) is None
    assert check(stored, asked, NONE.model_copy(update={guard: True})) == guard


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        # choice: "or" listing examples is no choice; the order said the same way on both sides
        ("Can I pay rent online?", "Is there a way to pay my rent through a website or app?"),
        ("Do you accept wire or ACH?", "Can I pay by bank transfer?"),
        ("What's the status of my order?", "Where is my order?"),
        ("Do I sign first or pay first?", "Which comes first, signing or paying?"),
        # time relation: a frequency, the same relation in other words, a relation on one side only
        ("Is rent paid once a month?", "Do I pay rent monthly?"),
        ("¿Pago una vez al mes?", "¿El pago es mensual?"),
        ("Can I move in once the lease is signed?", "Can I move in after signing the lease?"),
        ("Can I see the house before signing?", "Can I view the house prior to signing?"),
        ("Can I see the house before signing?", "Can I see the house?"),
        # tense: present and future are one question; the same tense said another way
        ("Do I get a refund?", "Will I get a refund?"),
        ("Did my payment go through?", "Was my payment processed?"),
        ("¿Cuándo llega mi paquete?", "¿Cuándo va a llegar mi paquete?"),
        # agent: I and you, a role noun in an apposition or as an object, usted
        ("Can I get an invoice?", "Can you send me an invoice?"),
        ("How can I, as a property owner, list my rental with you?", "I'm a landlord, how do I list my property?"),
        ("Do I need to tell my landlord?", "Do I have to notify the landlord?"),
        ("¿Tengo que pagar depósito?", "¿Tiene que pagar depósito?"),
        ("do I need title insurance", "is owner's title insurance something i actually need"),
    ],
)  # fmt: skip
def test_true_paraphrases_pass_the_grammatical_guards(stored, asked):
    for guard in ("choice", "time_relation", "tense", "agent"):
        assert check(stored, asked, NONE.model_copy(update={guard: True})) is None, guard


def test_the_grammatical_wrong_hits_of_the_tuning_files_are_refused():
    """holdout5's and holdout6's wrong hits no other guard refused (0.79-0.89): each refused by its own guard alone."""
    _refused_only_by("holdout5", "Do I verify my email first or set up 2FA first?", "choice")
    _refused_only_by("holdout6", "Una vez pagada la fianza, ¿cuántos días tengo para firmar?", "time_relation")
    _refused_only_by("holdout6", "Has the price dropped recently?", "tense", "Will the price drop soon?")
    _refused_only_by("holdout6", "¿Cuánto preaviso tengo que dar para dejar el piso?", "agent")


def test_a_permission_against_an_obligation_is_refused_by_the_modality_guard():
    modality = NONE.model_copy(update={"modality": True})
    for stored, asked in [
        ("¿Puedo pagar en efectivo?", "¿Debo pagar en efectivo?"),
        ("Can I sublet my room?", "Do I have to sublet my room if I leave?"),
        ("May I paint the walls?", "Must I paint the walls?"),
        ("Can I enable autopay?", "Do I need to enable autopay?"),
    ]:
        assert check(stored, asked, NONE) is None
        assert check(stored, asked, modality) == "modality"
    # a need stated (a request), the same modality in other words, advice: not compared
    for stored, asked in [
        ("Can I reschedule my viewing?", "I need to move my showing to another time."),
        ("Is renters insurance required?", "Do I need to have renters insurance?"),
        ("Can I get a refund?", "Should I ask for a refund?"),
    ]:
        assert check(stored, asked, modality) is None
    _refused_only_by("holdout5", "¿Puedo tener mascotas?", "modality")


def test_a_procedure_against_an_amount_or_a_person_is_another_focus():
    focus = NONE.model_copy(update={"focus": True})
    assert check("¿Cómo cambio de plan?", "¿Cuánto cuesta cambiar de plan?", focus) == "focus"
    assert check("How do I delete my account?", "Who can delete the account?", focus) == "focus"
    assert check("How do I pay rent?", "When is rent due?", focus) == "focus"
    assert check("How do I pay rent?", "Where can I pay rent?", focus) is None  # a place: often one question
    assert check("How do I contact billing?", "Who do I reach about a billing question?", focus) is None


@pytest.mark.parametrize(
    ("guard", "stored", "asked"),
    [
        ("dates", "Good morning, do the apartments have laundry?", "Is there laundry in the apartments?"),
        ("dates", "Buenas tardes, ¿puedo tener un gato?", "¿Se permite tener gato?"),
        ("entities", "Does the house on elm st have a pool?", "Does the house on Elm St have a pool?"),
        ("entities", "are you GDPR compliant", "do you comply with gdpr?"),
        ("negation", "my reset link isnt working", "My reset link doesn't work."),
        ("negation", "Is the apartment furnished?", "Is the apartment furnished or not?"),
        ("negation", "I'm not sure what I can afford, can we talk?", "Can we chat about what I can afford?"),
        ("roles", "Do I pay closing costs as the buyer?", "As a buyer, do I pay closing costs?"),
        ("roles", "Who pays the fee, the buyer or the seller?", "Is the fee paid by the seller or by the buyer?"),
        ("roles", "I need the invoice for March.", "Can you send me the March invoice?"),  # a request
        ("units", "Looking for a house under $500k", "Looking for a house under 500k"),
        ("antonyms", "How far is the house from the school?", "What's the distance from the house to the school?"),
        ("order", "Thanks! Can I export my data to CSV?", "Can I export my data to CSV? Thanks!"),
        # round 2 (holdout7 / holdout8): a number's scale in words or a capital letter, "por ciento", "unable",
        # "no later than"
        ("numbers", "Casas por menos de 300 mil dólares", "Casas por menos de $300,000"),
        ("numbers", "Homes in Frisco under 600k", "Houses in Frisco, max $600K"),
        ("numbers", "Busco un crédito de dos millones de pesos", "Busco un crédito de 2 millones de pesos"),
        ("numbers", "Is my budget of 1.5 million enough?", "Is a $1,500,000 budget enough?"),
        ("numbers", "Tengo el 20% de entrada", "Tengo el 20 por ciento de entrada"),
        ("units", "Tengo el 20% de entrada", "Tengo el 20 por ciento de entrada"),
        ("negation", "I can't log in.", "I'm unable to log in."),
        ("negation", "We need to move in by August 1.", "Our move-in date is no later than August 1."),
    ],
)  # fmt: skip
def test_harmless_differences_the_guards_no_longer_refuse(guard, stored, asked):
    """Each refused true paraphrases of the tuning files (2026-12-04) and is a form, not a meaning: a greeting, a
    name's case, a contraction without its apostrophe, "or not", alternatives in another order, ..."""
    assert check(stored, asked, NONE.model_copy(update={guard: True})) is None


@pytest.mark.parametrize(
    ("guard", "stored", "asked"),
    [
        ("dates", "Can I see the house in the morning?", "Can I see the house in the evening?"),
        ("entities", "Does the house on Elm St have a pool?", "Does the house on Oak St have a pool?"),
        ("negation", "Is the apartment furnished?", "Isnt the apartment furnished?"),
        ("roles", "Does the buyer pay the seller or the agent?", "Does the seller pay the buyer or the agent?"),
        ("units", "Is the fee $500?", "Is the fee 500 euros?"),
        ("antonyms", "Can I sublet my room to a student?", "Can I sublet a room from a student?"),
        ("numbers", "Casas por menos de 300 mil dólares", "Casas por menos de $400,000"),
        ("numbers", "Homes under 600K", "Homes under $600"),
        ("numbers", "Is a 5MB file too big?", "Is a 5,000,000 byte file too big?"),
        ("negation", "I'm unable to log in.", "I can log in."),
        ("negation", "Can I move in no sooner than August 1?", "Can I move in by August 1?"),
    ],
)
def test_what_the_loosened_guards_still_refuse(guard, stored, asked):
    assert check(stored, asked, NONE.model_copy(update={guard: True})) == guard


# ------------------------------------------------------------------- round 2 (holdout7 / holdout8 as tuning data)


@pytest.mark.parametrize(
    ("guard", "stored", "asked"),
    [
        # a passive's agent is the subject: "charged to X by Y" is "Y charges X"
        ("roles", "Does the landlord pay the tenant interest?", "Is interest paid to the landlord by the tenant?"),
        ("roles", "Does the buyer owe the seller the fee?", "Is the fee owed to the buyer by the seller?"),
        # a name both sides hold after "the" is a party: who needs whose permission
        ("roles", "Does the tenant need approval from the City to build?", "Does the City need the tenant's approval?"),
        # "already" / "ya" + a completed action against "before" it
        ("time_relation", "Should I cancel the order before paying?", "I paid already, can I still cancel the order?"),
        ("time_relation", "Can I change the date before I've signed?", "I've already signed, can I change the date?"),
        ("time_relation", "¿Puedo cancelar antes de pagar?", "Ya pagué, ¿puedo cancelar?"),
        ("time_relation", "¿Tengo que firmar antes de mudarme?", "Ya me he mudado, ¿tengo que firmar?"),
        # how long a process takes against a deadline to act
        ("focus", "How long does a cancellation take to process?", "How long do I have to cancel?"),
        ("focus", "How long does the inspection take?", "How much time do we have to schedule the inspection?"),
        ("focus", "¿Cuánto tarda la devolución?", "¿Cuánto tiempo tengo para hacer la devolución?"),
        ("focus", "¿Cuántos días tarda el envío?", "¿Cuántos días tengo para devolver el envío?"),
        # a yes / no question of what something includes against how much one part costs
        ("focus", "Does the rent include utilities?", "How much are utilities each month?"),
        ("focus", "¿Incluye el precio la cochera?", "¿Cuánto cuesta la cochera?"),
    ],
)  # fmt: skip
def test_passives_parties_completed_actions_and_deadlines_are_refused(guard, stored, asked):
    """The classes of holdout7's and holdout8's six wrong hits, in new sentences: each refused by its guard alone."""
    assert check(stored, asked, NONE) is None
    assert check(stored, asked, NONE.model_copy(update={guard: True})) == guard


@pytest.mark.parametrize(
    ("guard", "stored", "asked"),
    [
        # the same agent, said in the passive; alternatives asked in a passive; a possessive in the same place
        ("roles", "Who pays the agent's fee, buyer or seller?", "Is the agent's fee paid by the seller or buyer?"),
        ("roles", "Does the tenant need approval from the City?", "Does the tenant need the City's approval?"),
        ("roles", "Does the landlord have to follow GDPR?", "Under GDPR, does the landlord have rules to follow?"),
        # "already" with nothing done, or on both sides of the same relation; "ya" + a present
        ("time_relation", "I already signed, can I cancel?", "Once I've signed, can I still cancel?"),
        ("time_relation", "I already paid, when do I get the receipt?", "After paying, when do I get the receipt?"),
        ("time_relation", "¿Ya está disponible el piso?", "¿Puedo verlo antes de que se alquile?"),
        # a deadline said two ways, an obligation that lasts, notice to give, a deadline and a time
        ("focus", "How long do I have to cancel?", "How many days do I have to cancel?"),
        ("focus", "How long do I have to wait for a refund?", "How long does a refund take?"),
        ("focus", "How much notice do I have to give?", "How far in advance do I need to give notice?"),
        ("focus", "How long do I have to request a refund?", "When is the deadline to request a refund?"),
        ("focus", "¿Cuánto tiempo tengo que esperar el reembolso?", "¿Cuánto tarda el reembolso?"),
        ("focus", "¿Cuánto tiempo tengo para pedir un reembolso?", "¿Cuántos días tengo para pedir un reembolso?"),
        ("focus", "Does the rent include utilities?", "What does the rent include?"),
        ("focus", "Who pays for the inspection?", "Is the inspection paid by the buyer or does someone else cover it?"),
    ],
)  # fmt: skip
def test_the_same_shapes_said_alike_still_pass(guard, stored, asked):
    """True paraphrases in the shapes the round-2 rules read: the same subject, nothing done, the same focus."""
    assert check(stored, asked, NONE.model_copy(update={guard: True})) is None


def test_a_passive_with_the_roles_in_another_surface_order_is_still_refused():
    """A passive whose surface order differs stays refused, its agent read or not: reading it as the active side's
    order let two tuning role swaps through ("does the lender pay for the appraisal or the borrower" / "does the
    borrower get paid by the lender for the appraisal") and served no tuning paraphrase."""
    roles = NONE.model_copy(update={"roles": True})
    assert check("Does the buyer pay the seller?", "Is the seller paid by the buyer?", roles) == "roles"
    assert check("Does the landlord pay the tenant interest?", "Is interest paid to the tenant by the landlord?",
                 roles) == "roles"  # fmt: skip
    assert check("Does the listing agent get paid by the seller?", "Does the seller get paid by the listing agent?",
                 roles) == "roles"  # fmt: skip


def test_the_wrong_hits_of_holdout7_and_holdout8_are_refused():
    """The six wrong hits of the two blind files (0.81-0.98), each refused by its own guard alone."""
    _refused_only_by("holdout7", "Does the landlord need permission from the HOA to rent the unit?", "roles")
    _refused_only_by("holdout7", "Does the seller charge the buyer the transfer tax?", "roles")
    _refused_only_by("holdout7", "Should we view the property before applying?", "time_relation")
    _refused_only_by("holdout7", "¿Hay que pagar la fianza antes de firmar el contrato?", "time_relation")
    _refused_only_by(
        "holdout8", "How long does a refund take to show up?", "focus", "How long do I have to request a refund?"
    )
    _refused_only_by(
        "holdout8", "¿Cuánto tarda en llegar el reembolso?", "focus", "¿Cuánto tiempo tengo para pedir un reembolso?"
    )
