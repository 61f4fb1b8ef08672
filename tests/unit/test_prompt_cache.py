from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clawback.api.errors import InvalidRequestError
from clawback.tokens import count_request_tokens, prompt_blocks
from clawback.upstream.simulator.prompt_cache import CacheAccount, PromptCache

MODEL = "claude-sonnet-4-6"
MIN = 1024
EPHEMERAL = {"type": "ephemeral"}
ONE_HOUR = {"type": "ephemeral", "ttl": "1h"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def big(label: str, words: int = 1500) -> str:
    return f"{label} " + "alpha " * words


def body(system: list[dict[str, Any]], messages: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 100,
        "system": system,
        "messages": messages or [{"role": "user", "content": "What are the key terms?"}],
        **extra,
    }


def tokens_through(request: dict[str, Any], index: int) -> int:
    blocks, _ = prompt_blocks(request)
    return sum(b.tokens for b in blocks[: index + 1])


def run(cache: PromptCache, request: dict[str, Any], workspace: str = "ws", minimum: int = MIN) -> CacheAccount:
    account = cache.account(workspace, request, min_cacheable_tokens=minimum)
    cache.activate(account)
    u = account.usage
    total = u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens
    assert total == count_request_tokens(request)
    return account


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cache(clock: FakeClock) -> PromptCache:
    return PromptCache(clock=clock)


def cached_system(ttl: dict[str, Any] = EPHEMERAL) -> dict[str, Any]:
    return body([{"type": "text", "text": big("doc")}, {"type": "text", "text": "end", "cache_control": ttl}])


def test_write_then_read_within_ttl(cache: PromptCache, clock: FakeClock) -> None:
    request = cached_system()
    prefix = tokens_through(request, 1)
    first = run(cache, request).usage
    assert (first.cache_write_5m_input_tokens, first.cache_read_input_tokens) == (prefix, 0)
    assert first.input_tokens == count_request_tokens(request) - prefix
    clock.advance(240)
    second = run(cache, request).usage
    assert (second.cache_read_input_tokens, second.cache_creation_input_tokens) == (prefix, 0)
    assert second.input_tokens == first.input_tokens


def test_miss_after_five_minutes(cache: PromptCache, clock: FakeClock) -> None:
    request = cached_system()
    run(cache, request)
    clock.advance(301)
    usage = run(cache, request).usage
    assert usage.cache_read_input_tokens == 0
    assert usage.cache_write_5m_input_tokens == tokens_through(request, 1)


def test_ttl_runs_from_the_start_of_the_request(cache: PromptCache, clock: FakeClock) -> None:
    request = cached_system()
    account = cache.account("ws", request, min_cacheable_tokens=MIN)
    clock.advance(240)  # a slow first token: the entry still expires 5 minutes after the request started
    cache.activate(account)
    clock.advance(61)
    assert run(cache, request).usage.cache_read_input_tokens == 0


def test_one_hour_entry_survives_five_minutes(cache: PromptCache, clock: FakeClock) -> None:
    request = cached_system(ONE_HOUR)
    first = run(cache, request).usage
    assert first.cache_write_1h_input_tokens == tokens_through(request, 1)
    assert first.cache_write_5m_input_tokens == 0
    clock.advance(1800)
    assert run(cache, request).usage.cache_read_input_tokens == tokens_through(request, 1)
    clock.advance(3601)
    assert run(cache, request).usage.cache_read_input_tokens == 0


def test_read_refreshes_the_ttl(cache: PromptCache, clock: FakeClock) -> None:
    request = cached_system()
    run(cache, request)
    clock.advance(240)
    assert run(cache, request).usage.cache_read_input_tokens > 0  # refreshed: now lives until +540
    clock.advance(240)  # 480 s after the write, past its original 300 s
    assert run(cache, request).usage.cache_read_input_tokens > 0


def test_below_the_minimum_nothing_is_cached(cache: PromptCache) -> None:
    request = body([{"type": "text", "text": "short system prompt", "cache_control": EPHEMERAL}])
    for _ in range(2):
        usage = run(cache, request).usage
        assert (usage.cache_read_input_tokens, usage.cache_creation_input_tokens) == (0, 0)
        assert usage.input_tokens == count_request_tokens(request)


def test_fifth_breakpoint_is_rejected(cache: PromptCache) -> None:
    blocks = [{"type": "text", "text": f"part {i}", "cache_control": EPHEMERAL} for i in range(5)]
    with pytest.raises(
        InvalidRequestError, match=r"A maximum of 4 blocks with cache_control may be provided\. Found 5\."
    ):
        cache.account("ws", body(blocks), min_cacheable_tokens=MIN)
    with pytest.raises(InvalidRequestError, match="Found 5"):
        cache.account("ws", body(blocks[:4], cache_control=EPHEMERAL), min_cacheable_tokens=MIN)


def test_one_hour_after_five_minutes_is_rejected(cache: PromptCache) -> None:
    request = {
        "model": MODEL,
        "max_tokens": 10,
        "tools": [{"name": "t", "input_schema": {"type": "object"}, "cache_control": EPHEMERAL}],
        "system": [{"type": "text", "text": "sys", "cache_control": ONE_HOUR}],
        "messages": [{"role": "user", "content": "hi"}],
    }
    with pytest.raises(
        InvalidRequestError, match=r"system\.0\.cache_control\.ttl: a ttl='1h' cache_control block must"
    ):
        cache.account("ws", request, min_cacheable_tokens=MIN)
    bad_ttl = body([{"type": "text", "text": "x", "cache_control": {"type": "ephemeral", "ttl": "2h"}}])
    with pytest.raises(InvalidRequestError, match="ttl"):
        cache.account("ws", bad_ttl, min_cacheable_tokens=MIN)


def test_unknown_cache_control_fields_are_accepted(cache: PromptCache) -> None:
    request = body([{"type": "text", "text": big("doc"), "cache_control": {"type": "ephemeral", "scope": "global"}}])
    assert run(cache, request).usage.cache_write_5m_input_tokens > 0


def conversation(turns: int, marker_on_last: bool = True) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": [{"type": "text", "text": big("context")}]}]
    for i in range(turns):
        messages.append({"role": "assistant", "content": [{"type": "text", "text": f"answer {i}"}]})
        messages.append({"role": "user", "content": [{"type": "text", "text": f"question {i}"}]})
    if marker_on_last:
        messages[-1]["content"][-1]["cache_control"] = EPHEMERAL
    return messages


def test_lookback_reads_the_previous_turn(cache: PromptCache, clock: FakeClock) -> None:
    turn1 = body([{"type": "text", "text": "sys"}], conversation(1))
    first = run(cache, turn1).usage
    assert first.cache_read_input_tokens == 0
    clock.advance(10)
    turn2 = body([{"type": "text", "text": "sys"}], conversation(2))  # the breakpoint moved forward one turn
    second = run(cache, turn2).usage
    assert second.cache_read_input_tokens == first.cache_write_5m_input_tokens
    blocks, _ = prompt_blocks(turn2)
    assert second.cache_write_5m_input_tokens == blocks[-2].tokens + blocks[-1].tokens


def test_documented_lookback_window_of_twenty_positions(cache: PromptCache) -> None:
    base = conversation(1)
    run(cache, body([{"type": "text", "text": "sys"}], base))
    base[-1]["content"][-1].pop("cache_control")

    def extended(extra_blocks: int) -> dict[str, Any]:
        more = [{"type": "text", "text": f"note {i}"} for i in range(extra_blocks)]
        more[-1]["cache_control"] = EPHEMERAL
        return body(
            [{"type": "text", "text": "sys"}], [*base[:-1], {"role": "user", "content": [*base[-1]["content"], *more]}]
        )

    assert run(cache, extended(19)).usage.cache_read_input_tokens > 0  # the entry is the 20th position
    fresh = PromptCache(clock=cache.clock)
    run(fresh, body([{"type": "text", "text": "sys"}], conversation(1)))
    assert run(fresh, extended(20)).usage.cache_read_input_tokens == 0  # one position outside the window


def test_runs_of_tool_use_and_tool_result_count_as_one_position(cache: PromptCache) -> None:
    start = conversation(0)
    run(cache, body([{"type": "text", "text": "sys"}], start))
    start[-1]["content"][-1].pop("cache_control")
    uses = [{"type": "tool_use", "id": f"t{i}", "name": "read", "input": {"n": i}} for i in range(25)]
    results = [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "ok"} for i in range(25)]
    results[-1]["cache_control"] = EPHEMERAL
    messages = [*start, {"role": "assistant", "content": uses}, {"role": "user", "content": results}]
    assert run(cache, body([{"type": "text", "text": "sys"}], messages)).usage.cache_read_input_tokens > 0


def test_mixed_ttls_split_the_write(cache: PromptCache) -> None:
    tools = [
        {"name": "lookup", "description": big("tool"), "input_schema": {"type": "object"}, "cache_control": ONE_HOUR}
    ]
    system = [{"type": "text", "text": big("instructions"), "cache_control": EPHEMERAL}]
    request = {
        "model": MODEL,
        "max_tokens": 10,
        "tools": tools,
        "system": system,
        "messages": [{"role": "user", "content": "q"}],
    }
    a_tools, a_system = tokens_through(request, 0), tokens_through(request, 1)
    first = run(cache, request).usage
    assert (first.cache_write_1h_input_tokens, first.cache_write_5m_input_tokens) == (a_tools, a_system - a_tools)
    changed = {**request, "system": [{"type": "text", "text": big("other"), "cache_control": EPHEMERAL}]}
    second = run(cache, changed).usage  # the tools prefix hits, the new system prompt is a 5-minute write
    assert second.cache_read_input_tokens == a_tools
    assert second.cache_write_5m_input_tokens == tokens_through(changed, 1) - a_tools
    assert second.cache_write_1h_input_tokens == 0


def test_parallel_requests_before_activation_all_pay_the_write(cache: PromptCache) -> None:
    request = cached_system()
    first = cache.account("ws", request, min_cacheable_tokens=MIN)
    second = cache.account("ws", request, min_cacheable_tokens=MIN)
    assert first.usage.cache_write_5m_input_tokens == second.usage.cache_write_5m_input_tokens > 0
    cache.activate(first)
    cache.activate(second)
    assert run(cache, request).usage.cache_read_input_tokens == first.usage.cache_write_5m_input_tokens


def test_automatic_caching_moves_forward_with_the_conversation(cache: PromptCache) -> None:
    turn1 = body([{"type": "text", "text": "sys"}], conversation(1, marker_on_last=False), cache_control=EPHEMERAL)
    first = run(cache, turn1).usage
    assert first.cache_write_5m_input_tokens == count_request_tokens(turn1) - first.input_tokens > 0
    turn2 = body([{"type": "text", "text": "sys"}], conversation(2, marker_on_last=False), cache_control=EPHEMERAL)
    second = run(cache, turn2).usage
    assert second.cache_read_input_tokens == first.cache_write_5m_input_tokens
    assert second.cache_write_5m_input_tokens > 0


def test_automatic_caching_edge_cases(cache: PromptCache) -> None:
    same = body([{"type": "text", "text": big("doc")}], conversation(1), cache_control=EPHEMERAL)
    account = cache.account("ws", same, min_cacheable_tokens=MIN)
    assert len(account.breakpoints) == 1  # the explicit marker on the last block already covers it: a no-op
    differs = body([{"type": "text", "text": big("doc")}], conversation(1), cache_control=ONE_HOUR)
    with pytest.raises(InvalidRequestError, match="cache_control"):
        cache.account("ws", differs, min_cacheable_tokens=MIN)
    thinking_last = body(
        [{"type": "text", "text": big("doc")}],
        [
            {"role": "user", "content": "q"},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "a"}, {"type": "thinking", "thinking": "t", "signature": "s"}],
            },
        ],
        cache_control=EPHEMERAL,
    )
    walked = cache.account("ws", thinking_last, min_cacheable_tokens=MIN)
    assert walked.breakpoints == (len(prompt_blocks(thinking_last)[0]) - 2,)


@pytest.mark.parametrize(("workspace", "model"), [("other-workspace", MODEL), ("ws", "claude-opus-4-6")])
def test_caches_are_per_workspace_and_model(cache: PromptCache, workspace: str, model: str) -> None:
    request = cached_system()
    run(cache, request)
    usage = run(cache, {**request, "model": model}, workspace=workspace).usage
    assert usage.cache_read_input_tokens == 0
    assert usage.cache_creation_input_tokens > 0


def test_tool_choice_change_invalidates_messages_but_not_system(cache: PromptCache) -> None:
    system = [{"type": "text", "text": big("doc"), "cache_control": EPHEMERAL}]
    request = body(system, conversation(1), tools=[{"name": "t", "input_schema": {"type": "object"}}])
    run(cache, request)
    forced = {**request, "tool_choice": {"type": "any"}}
    changed = run(cache, forced).usage
    assert changed.cache_read_input_tokens == tokens_through(forced, 1)  # (with the any/tool tool prompt size)
    assert changed.cache_write_5m_input_tokens > 0


def test_memory_is_bounded(clock: FakeClock) -> None:
    cache = PromptCache(clock=clock, max_entries=10)
    for i in range(30):
        run(cache, body([{"type": "text", "text": big(f"doc{i}"), "cache_control": EPHEMERAL}]))
    assert len(cache) <= 10


# -- the invariant: input + cache read + cache writes == count_tokens, whatever the request -------------------

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60) | st.builds(
    lambda n: "alpha " * n, st.integers(0, 900)
)
text_blocks = st.builds(lambda t: {"type": "text", "text": t}, texts)
tool_uses = st.builds(lambda i: {"type": "tool_use", "id": f"t{i}", "name": "f", "input": {"i": i}}, st.integers(0, 3))
tool_results = st.builds(lambda t: {"type": "tool_result", "tool_use_id": "t0", "content": t}, texts)
thinking = st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "s"}, texts)
blocks = st.one_of(text_blocks, tool_uses, tool_results, thinking)
messages = st.lists(
    st.builds(
        lambda role, content: {"role": role, "content": content},
        st.sampled_from(["user", "assistant"]),
        st.one_of(texts, st.lists(blocks, max_size=4)),
    ),
    min_size=1,
    max_size=6,
)
tools = st.lists(
    st.builds(lambda d: {"name": "t", "description": d, "input_schema": {"type": "object"}}, texts), max_size=3
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    request: dict[str, Any] = {
        "model": draw(st.sampled_from([MODEL, "claude-opus-5", "claude-haiku-4-5"])),
        "max_tokens": 10,
        "tools": draw(tools),
        "system": draw(st.one_of(texts, st.lists(text_blocks, max_size=3))),
        "messages": draw(messages),
    }
    if draw(st.booleans()):
        request["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    found = [
        b
        for _, b in _all_blocks(request)
        if b.get("type") != "thinking" and not (b.get("type") == "text" and not b.get("text"))
    ]
    chosen = draw(st.lists(st.sampled_from(found), max_size=3, unique_by=id)) if found else []
    automatic = draw(st.booleans())
    one_hour_first = draw(st.integers(0, len(chosen)))
    order = {id(b): i for i, (_, b) in enumerate(_all_blocks(request))}
    for rank, block in enumerate(sorted(chosen, key=lambda b: order[id(b)])):
        block["cache_control"] = ONE_HOUR if rank < one_hour_first else EPHEMERAL
    if automatic:
        request["cache_control"] = EPHEMERAL
    return request


def _all_blocks(request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = [("tools", t) for t in request["tools"]]
    if isinstance(request["system"], list):
        out += [("system", b) for b in request["system"]]
    for message in request["messages"]:
        if isinstance(message["content"], list):
            out += [("messages", b) for b in message["content"]]
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=requests(), second=requests(), minimum=st.sampled_from([0, 50, 1024]))
def test_usage_always_adds_up_to_count_tokens(first: dict[str, Any], second: dict[str, Any], minimum: int) -> None:
    cache = PromptCache(clock=FakeClock())
    for request in (first, second, first):
        try:
            account = cache.account("ws", request, min_cacheable_tokens=minimum)
        except InvalidRequestError:
            continue  # e.g. automatic 5m on a block that carries a 1h marker: a documented 400
        cache.activate(account)
        u = account.usage
        assert (
            min(u.input_tokens, u.cache_read_input_tokens, u.cache_write_5m_input_tokens, u.cache_write_1h_input_tokens)
            >= 0
        )
        assert u.input_tokens + u.cache_read_input_tokens + u.cache_creation_input_tokens == count_request_tokens(
            request
        )
