"""The reference workloads: reproducible, valid Messages API requests, labels that mean what they say."""

from __future__ import annotations

import orjson
import pytest

from clawback.api.messages import count_cache_breakpoints, validate_messages_request
from clawback.workloads import WORKLOADS, build_workload, real_estate_mix
from clawback.workloads.real_estate import system_prompt


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_seeded_and_reproducible(name):
    first, again, other = build_workload(name, 1, 0.2), build_workload(name, 1, 0.2), build_workload(name, 2, 0.2)
    dump = lambda w: orjson.dumps([(s.ref, s.at_s, s.request, s.labels.needed_facts, s.labels.same_as) for s in w])  # noqa: E731
    assert dump(first) == dump(again)
    assert dump(first) != dump(other)


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_requests_are_valid_and_labels_stay_outside(name):
    workload = build_workload(name, 0, 1.0)
    assert len(workload) >= 100
    times = [s.at_s for s in workload]
    assert times == sorted(times)
    assert len({s.ref for s in workload}) == len(workload)
    for step in workload:
        validate_messages_request(step.request, strict=True)
        assert count_cache_breakpoints(step.request) <= 4
        text = orjson.dumps(step.request).decode()
        assert step.ref not in text and "same_as" not in text and "needed_facts" not in text


def test_lead_chat_conversations_and_fact_labels():
    workload = build_workload("lead_chat", 0, 1.0)
    sessions: dict[str, list] = {}
    for step in workload:
        sessions.setdefault(step.labels.session, []).append(step)
    assert len(sessions) == 12
    assert all(10 <= len(turns) <= 60 for turns in sessions.values())
    assert any(len(turns) >= 40 for turns in sessions.values())
    system = system_prompt()
    labelled = 0
    for turns in sessions.values():
        for index, step in enumerate(turns):
            messages = step.request["messages"]
            assert len(messages) == 2 * index + 1  # the whole history so far, then the new user turn
            assert step.request["system"][0]["cache_control"] == {"type": "ephemeral"}
            earlier = " ".join(m["content"] for m in messages[:-1] if m["role"] == "user")
            for value in step.labels.needed_facts.values():
                labelled += 1
                assert value not in system  # only the conversation can carry it
                assert value not in messages[-1]["content"]  # the turn itself does not restate it
                assert value in earlier  # the lead said it before
    assert labelled > 200


def test_faq_repeats_paraphrases_and_classes():
    workload = build_workload("faq", 0, 1.0)
    extras = workload.extras
    assert 0.2 < extras["exact_repeat_rate"] < 0.6 and 0.1 < extras["paraphrase_rate"] < 0.5
    class_of: dict[str, str] = {}
    for step in workload:
        text = step.request["messages"][0]["content"]
        assert class_of.setdefault(text, step.labels.same_as) == step.labels.same_as  # same words, same class
        assert step.request["temperature"] == 0
    assert len(set(class_of.values())) < len(class_of)  # paraphrases share a class


def test_scoring_shares_one_prefix_and_agentic_grows_with_client_breakpoints():
    scoring = build_workload("lead_scoring", 0, 1.0)
    assert len(scoring) >= 200 and len({s.request["system"] for s in scoring}) == 1
    agentic = build_workload("agentic", 0, 0.3)
    by_session: dict[str, list] = {}
    for step in agentic:
        by_session.setdefault(step.labels.session, []).append(step)
    for steps in by_session.values():
        sizes = [len(s.request["messages"]) for s in steps]
        assert sizes == sorted(sizes) and sizes[-1] > sizes[0]
        last = steps[-1].request
        assert last["tools"] and last["system"][-1]["cache_control"] == {"type": "ephemeral"}
        assert last["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
        assert count_cache_breakpoints(last) == 2
        assert any(b.get("type") == "tool_result" for m in last["messages"] for b in m["content"])


def test_mix_blends_all_real_estate_traffic():
    mix = real_estate_mix(0, 0.1)
    assert {s.ref.split("/")[0] for s in mix} == {"lead_chat", "lead_scoring", "property_match", "faq"}
    with pytest.raises(ValueError, match="unknown workload"):
        build_workload("nope")


def test_agentic_labels_name_what_the_agent_was_told_and_last_saw():
    agentic = build_workload("agentic", 0, 1.0)
    assert agentic.turns_are_round_trips
    kinds: set[str] = set()
    instructions: set[str] = set()
    for step in agentic:
        text = orjson.dumps(step.request["messages"]).decode()
        facts = step.labels.needed_facts
        assert facts["task"] in step.request["messages"][0]["content"][-1]["text"]
        for name, value in facts.items():
            kinds.add(name.rsplit("_", 1)[0] if name.startswith("instruction_") else name)
            assert orjson.dumps(value).decode()[1:-1] in text  # the request carries it: pruning must keep it
            if name.startswith("instruction_"):
                instructions.add(value)
        if "failing_test" in facts:
            assert facts["failing_test"].startswith("tests/") and facts["failing_test"].endswith(" FAILED")
    assert kinds == {"task", "instruction", "failing_test", "edited_file"}
    assert len(instructions) > 1  # follow-ups differ, so a later one is never "kept" through an earlier copy
