"""Prompt-cache billing over HTTP: the usage the documentation predicts for a sequence of requests."""

from __future__ import annotations

import anthropic
import pytest

MODEL = "claude-sonnet-4-6"  # minimum cacheable prompt: 1,024 tokens
POLICY = " ".join(f"Agency policy clause {i}: viewings need 24 hours notice and photo ID." for i in range(200))


@pytest.fixture
def client(simulator):
    return anthropic.Anthropic(base_url=simulator.url, api_key="sk-cache-tests", max_retries=0)


def ask(client, question: str, *, ttl: str | None = None, system: str = POLICY, history=()):
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return client.messages.create(
        model=MODEL,
        max_tokens=20,
        system=[{"type": "text", "text": system, "cache_control": control}],
        messages=[*history, {"role": "user", "content": question}],
    ).usage


def test_write_then_read_then_expiry(client, sim_admin):
    first = ask(client, "Can I view on Sunday?")
    assert first.cache_creation_input_tokens > 1024 and first.cache_read_input_tokens == 0
    assert first.cache_creation.ephemeral_5m_input_tokens == first.cache_creation_input_tokens
    second = ask(client, "And on Monday?")
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens == 0
    sim_admin.post("/_simulator/clock", json={"advance_s": 301})
    third = ask(client, "And on Tuesday?")
    assert third.cache_read_input_tokens == 0
    assert third.cache_creation_input_tokens == first.cache_creation_input_tokens


def test_one_hour_ttl_survives_five_minutes(client, sim_admin):
    first = ask(client, "q1", ttl="1h", system=POLICY + " (1h)")
    assert first.cache_creation.ephemeral_1h_input_tokens == first.cache_creation_input_tokens > 0
    sim_admin.post("/_simulator/clock", json={"advance_s": 600})
    assert ask(client, "q2", ttl="1h", system=POLICY + " (1h)").cache_read_input_tokens > 0


def test_below_minimum_length_is_not_cached(client):
    usage = ask(client, "q", system="Short policy.")
    assert usage.cache_creation_input_tokens == 0 and usage.cache_read_input_tokens == 0
    assert usage.input_tokens > 0


def test_read_through_the_lookback(client):
    """The breakpoint moves forward one turn; the earlier prefix is still found and read."""
    history = [{"role": "user", "content": POLICY}, {"role": "assistant", "content": "Noted."}]

    def turn(extra):
        msgs = history + extra
        msgs[-1] = {
            "role": msgs[-1]["role"],
            "content": [{"type": "text", "text": msgs[-1]["content"], "cache_control": {"type": "ephemeral"}}],
        }
        return client.messages.create(model=MODEL, max_tokens=20, messages=msgs).usage  # fmt: skip

    first = turn([{"role": "user", "content": "When can I view?"}])
    assert first.cache_creation_input_tokens > 1024
    second = turn([{"role": "user", "content": "When can I view?"}, {"role": "assistant", "content": "Sunday."},
                   {"role": "user", "content": "Great, book it."}])  # fmt: skip
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert second.cache_creation_input_tokens > 0  # the new turns are written at the new breakpoint


def test_workspaces_do_not_share_a_cache(simulator):
    a = anthropic.Anthropic(base_url=simulator.url, api_key="sk-workspace-a", max_retries=0)
    b = anthropic.Anthropic(base_url=simulator.url, api_key="sk-workspace-b", max_retries=0)
    ask(a, "q")
    assert ask(b, "q").cache_read_input_tokens == 0


def test_totals_match_the_sum_of_usage(client, sim_admin):
    sim_admin.post("/_simulator/reset")
    usages = [ask(client, f"question {i}") for i in range(3)]
    totals = sim_admin.get("/_simulator/totals").json()
    assert totals["requests"] == 3
    assert totals["usage"]["cache_read_input_tokens"] == sum(u.cache_read_input_tokens for u in usages)
    assert totals["usage"]["output_tokens"] == sum(u.output_tokens for u in usages)
