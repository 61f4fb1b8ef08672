"""What a question is about (``semantic_cache.topic``): the two tuning negatives that held the threshold, in their
own words and in new sentences of the same shape, are refused; paraphrases of other shapes are not."""

from __future__ import annotations

import pytest

from clawback.config import SemanticGuards
from clawback.pipeline.semantic_cache.guards import check
from clawback.pipeline.semantic_cache.topic import modifier_only, request_differs


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("¿Cuándo se reúne la asamblea del condominio?", "¿Cuándo mandan los estados de cuenta del condominio?"),
        ("When does the board of the HOA meet?", "When are the late notices of the HOA mailed?"),
    ],
)
def test_shared_words_only_in_a_modifier_are_different_things_asked(stored, asked):
    assert modifier_only(stored, asked)


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("When is rent due?", "When is the rent due each month?"),  # the thing asked is shared
        ("What is the price of parking?", "What is the cost of parking?"),  # synonyms are not things of their own
        ("When does the pool open?", "What time does the gym of the building open?"),  # another question word
    ],
)
def test_a_shared_thing_or_another_opening_is_not_refused(stored, asked):
    assert not modifier_only(stored, asked)


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("¿La casa tiene aire acondicionado?",
         "El aire acondicionado de la casa hace un ruido raro, ¿lo pueden revisar?"),
        ("Does the unit have a dishwasher?", "The dishwasher in my unit leaks, can you send someone?"),
    ],
)  # fmt: skip
def test_a_report_and_a_request_to_act_against_a_question_is_refused(stored, asked):
    assert request_differs(stored, asked) and request_differs(asked, stored)


@pytest.mark.parametrize(
    ("stored", "asked"),
    [
        ("Thanks! Can you tell me the square footage?", "What is the square footage?"),  # telling is asking
        ("¿Puedo renovar mi contrato?", "Se me acaba el contrato, ¿se puede renovar?"),  # impersonal
        ("My invoice has the wrong name, can you fix it?", "Our invoice shows the wrong name - how do we fix it?"),
    ],
)
def test_telling_impersonal_and_two_clause_questions_are_not_requests_against_a_question(stored, asked):
    assert not request_differs(stored, asked)


def test_the_guards_let_both_threshold_negatives_through_so_the_checks_are_what_refuses_them():
    guards = SemanticGuards()
    meeting = ("¿Cuándo se reúne la asamblea del condominio?", "¿Cuándo mandan los estados de cuenta del condominio?")
    repair = ("¿La casa tiene aire acondicionado?", "El aire acondicionado de la casa hace un ruido raro, ¿lo revisan?")
    assert check(*meeting, guards) is None and check(*repair, guards) is None
