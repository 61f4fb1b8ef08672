"""The memory keeps what the user said and agreed to, replaces corrected values, and records an agent's code
facts (issue 18); the eval counts a stale value only where the memory presents it as current."""

from __future__ import annotations

from typing import Any

from clawback.bench.pruning_eval import _presented_as_current, _stale_shown
from clawback.pipeline.pruning.facts import (
    agrees,
    corrected_values,
    extract_facts,
    render_memory,
    sentences,
)


def _texts(facts: list[tuple[str, str]]) -> list[str]:
    return [text for _, text in facts]


def test_every_user_sentence_is_kept_but_small_talk_and_questions_for_information() -> None:
    said = (
        "No car. He bikes. longfellow, seward, maybe prospect park. Thanks, that's helpful. ok. "
        "What's the HOA on that one? can we pay the deposit in two parts? Budget is max $1.2M."
    )
    facts = _texts(extract_facts([{"role": "user", "content": said}]))
    assert facts == [
        "No car.", "He bikes.", "longfellow, seward, maybe prospect park.",
        "can we pay the deposit in two parts?", "Budget is max $1.2M.",  # "$1.2M" is one sentence
    ]  # fmt: skip
    assert sentences("See storage.py first. Mail a.b@x.com now!") == ["See storage.py first.", "Mail a.b@x.com now!"]


def test_the_assistant_keeps_recaps_and_the_proposals_the_user_agreed_to() -> None:
    proposal = "Marisol has 1pm open too. So Saturday at 1pm at 4560 N Leavitt St. Confirm?"
    chat: list[dict[str, Any]] = [
        {"role": "user", "content": "we need a garage"},
        {"role": "assistant", "content": "Noted: garage required, detached OK. Noted, thank you. Any pets?"},
    ]
    assert _texts(extract_facts(chat))[1:] == ["Noted: garage required, detached OK."]  # a courtesy records nothing
    turn = [{"role": "user", "content": "can she do saturday"}, {"role": "assistant", "content": proposal}]
    assert _texts(extract_facts(turn))[1:] == ["So Saturday at 1pm at 4560 N Leavitt St."]  # a recap
    # the user's next message agrees: every sentence of the proposal with a specific is kept
    agreed = _texts(extract_facts(turn, next_user="yes! that works"))[1:]
    assert agreed == ["Marisol has 1pm open too.", "So Saturday at 1pm at 4560 N Leavitt St."]
    assert agrees("Yep, book it") and agrees("sounds good") and not agrees("let me ask her first")


def test_a_correction_replaces_the_value_it_negates_in_older_lines() -> None:
    fix = "wait actually, i need to correct the budget: we're now saying under 560, not 575. sorry"
    assert corrected_values(fix) == (("value", "575"),)
    assert corrected_values("we want 3 bedrooms, not 2") == ()  # no sign of a correction: a preference
    phone = "Oh, I made a mistake with the phone. It's 604-555-0184, the digits are swapped."
    assert corrected_values(phone) == (("phone", "604-555-0184"),)
    facts = [
        (1, "user", "Preapproved up to $610,000 but we'd like to stay under 575 if we can."),
        (1, "user", "Our home phone is 604-555-0148."),
        (6, "user", "we're now saying under 560, not 575."),
    ]
    memory = render_memory(1, 6, 2, facts, corrections=[(6, "value", "575"), (8, "phone", "604-555-0184")])
    assert "$610,000 but we'd like to stay under [corrected in t7] if we can." in memory
    assert "Our home phone is [corrected in t9]." in memory
    assert "- t7 user: we're now saying under 560, not 575." in memory  # the correction itself stays
    # the eval: a negated mention is not "presented as current"; a word that merely begins like it neither
    assert not _presented_as_current("575", memory) and not _presented_as_current("604-555-0148", memory)
    assert not _presented_as_current("june 1", "we move june 15, not june 1")
    assert _presented_as_current("June 1", "- t2 user: june 1. me and my roommate")


def test_an_agent_turn_records_the_files_it_edited_and_what_they_define() -> None:
    edit = {"path": "tests/test_models.py", "old_str": "", "new_str": "def test_deleted_patient_resolves():\n    ..."}
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Fix the soft-delete bug; don't touch migrations/."},
        {"role": "assistant", "content": [
            {"type": "text", "text": "The fix is to filter on deleted_at."},
            {"type": "tool_use", "id": "toolu_1", "name": "edit_file", "input": edit},
        ]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content":
                                      "pg_dump: error: aborting because of server version mismatch\n"
                                      "pg_dump: detail: server version: 16.2; pg_dump version: 14.11\nok"}]},
    ]  # fmt: skip
    facts = extract_facts(messages)
    assert facts[0] == ("user", "Fix the soft-delete bug; don't touch migrations/.")
    assert ("assistant", "The fix is to filter on deleted_at.") in facts  # the agent's own note
    assert ("tool", "pg_dump: error: aborting because of server version mismatch") in facts
    assert ("tool", "pg_dump: detail: server version: 16.2; pg_dump version: 14.11") in facts  # its detail
    assert facts[-1] == ("tool", "edited tests/test_models.py (defines test_deleted_patient_resolves)")


def test_the_eval_reads_stale_values_in_the_memory_block_only() -> None:
    memory = '<conversation-memory turns="2-9" omitted="8">\n- t3 user: our budget is under 575\n</conversation-memory>'
    body: dict[str, Any] = {"messages": [
        {"role": "user", "content": [{"type": "text", "text": memory}, {"type": "text", "text": "hi"}]},
        {"role": "assistant", "content": "we had said 480 before"},
    ]}  # fmt: skip
    assert _stale_shown(body, ["under 575", "480", "999"]) == ["under 575"]  # verbatim turns are not memory
