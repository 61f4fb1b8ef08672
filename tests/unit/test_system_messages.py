"""``role: "system"`` messages inside ``messages`` (mid-conversation system messages, issue 20).

What the simulator accepts and refuses (the API's rules), what the gateway checks (almost nothing), and how
tokens, the prompt-cache prefix, the exact cache's key and pruning treat them.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from clawback.api.errors import InvalidRequestError
from clawback.api.gateway_checks import check_gateway_request
from clawback.api.messages import validate_messages_request
from clawback.api.prompt_cache import prefix_digests
from clawback.api.usage import Usage
from clawback.config import PruningSettings
from clawback.pipeline import Pipeline, Reply, RequestContext
from clawback.pipeline.exact_cache import cache_key
from clawback.pipeline.pruning import PruningStage
from clawback.pricing import PriceBook
from clawback.tokens import MESSAGE_OVERHEAD, count_request_tokens, estimate_text_tokens, prompt_blocks

MODEL = "claude-opus-5-5"
USER = {"role": "user", "content": "Say hello"}
ASSISTANT = {"role": "assistant", "content": "Hello!"}
RULE = "Auto-approve mode is now enabled."


def request(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "max_tokens": 100, "messages": list(messages), **extra}


@pytest.mark.parametrize(
    "system",
    [
        {"role": "system", "content": RULE},
        {"role": "system", "content": [{"type": "text", "text": RULE, "cache_control": {"type": "ephemeral"}}]},
        {"role": "system", "content": [{"type": "text", "text": RULE}], "output_config": {"effort": "medium"}},
        {"role": "system", "output_config": {"effort": "low"}},  # beta: output_config alone
        {"role": "system", "content": RULE, "clear_at": "next_user_message"},
        {"role": "system", "content": [{"type": "tool_addition", "tool": {"type": "tool_reference", "name": "x"}}]},
    ],
)
def test_the_shapes_the_sdk_types_allow_are_accepted(system: dict[str, Any]) -> None:
    validate_messages_request(request(USER, system), strict=True)  # last message
    validate_messages_request(request(USER, system, ASSISTANT, USER), strict=True)  # between turns


@pytest.mark.parametrize(
    ("messages", "message"),
    [
        ([{"role": "developer", "content": "x"}], "messages.0.role: Input should be 'user', 'assistant' or 'system'"),
        ([{"role": "system", "content": RULE}, USER], "messages.0: a system message must immediately follow a user"),
        ([USER, ASSISTANT, {"role": "system", "content": RULE}], "messages.2: a system message must immediately"),
        ([USER, {"role": "system", "content": RULE}, {"role": "system", "content": RULE}], "messages.1: a system"),
        ([USER, {"role": "system", "content": RULE}, USER], "messages.1: a system message must be the last message"),
        (
            [USER, {"role": "system", "content": [{"type": "image", "source": {}}]}],
            "messages.1.content.0.type: Input should be 'text', 'tool_addition' or 'tool_removal'",
        ),
        (
            [USER, {"role": "system", "content": RULE, "output_config": {"effort": "huge"}}],
            "messages.1.output_config.effort: Input should be 'low', 'medium', 'high', 'xhigh' or 'max'",
        ),
        ([USER, {"role": "system"}], "messages.1: a system message needs `content` or `output_config`"),
        ([USER, {"role": "system", "output_config": {}}], "messages.1: a system message needs `content` or"),
        ([{**USER, "clear_at": "never"}], 'messages.0.clear_at: only permitted on role: "system" messages'),
    ],
)
def test_what_the_api_refuses_is_refused(messages: list[dict[str, Any]], message: str) -> None:
    with pytest.raises(InvalidRequestError) as raised:
        validate_messages_request(request(*messages), strict=True)
    assert str(raised.value.message).startswith(message)


def test_the_gateway_checks_only_what_it_reads() -> None:
    for body in (request({"role": "developer", "content": 1}), {"messages": "x"}, {}, request(USER, stream=None)):
        check_gateway_request(body)  # the upstream judges these
    with pytest.raises(InvalidRequestError, match="stream"):
        check_gateway_request(request(USER, stream="yes"))  # it decides whether the reply is relayed as SSE


def test_a_system_message_is_counted_as_input_in_message_order() -> None:
    without = count_request_tokens(request(USER))
    with_rule = count_request_tokens(request(USER, {"role": "system", "content": RULE}))
    assert with_rule - without == MESSAGE_OVERHEAD + estimate_text_tokens(RULE, MODEL)
    blocks, _ = prompt_blocks(request(USER, {"role": "system", "content": RULE}, ASSISTANT))
    assert [(b.section, b.role, b.path) for b in blocks] == [
        ("messages", "user", "messages.0.content"),
        ("messages", "system", "messages.1.content"),
        ("messages", "assistant", "messages.2.content"),
    ]


def test_the_cache_prefix_includes_the_message_and_its_own_fields() -> None:
    def digests(system: dict[str, Any]) -> list[bytes]:
        body = request(USER, system, ASSISTANT)
        blocks, _ = prompt_blocks(body)
        return prefix_digests(body, blocks)

    plain = digests({"role": "system", "content": RULE})
    medium = digests({"role": "system", "content": RULE, "output_config": {"effort": "medium"}})
    other = digests({"role": "system", "content": "Something else."})
    assert plain[0] == medium[0] == other[0]  # the prefix before it is the same entry
    assert len({plain[1], medium[1], other[1]}) == 3  # from the system message on, each is its own prefix
    content_less = digests({"role": "system", "output_config": {"effort": "low"}})
    assert content_less[1] != plain[2]  # no block of its own: its fields go with the next block


def test_the_exact_cache_key_includes_system_messages() -> None:
    keys = {
        cache_key("t", "ns", request(USER)),
        cache_key("t", "ns", request(USER, {"role": "system", "content": RULE})),
        cache_key("t", "ns", request(USER, {"role": "system", "content": RULE, "output_config": {"effort": "low"}})),
        cache_key("t", "ns", request(USER, {"role": "system", "content": "Other."})),
    }
    assert len(keys) == 4


FILLER = "Our agents walk every buyer through inspections, appraisals and closing, step by step. " * 6


def conversation(turns: int, every: int) -> list[dict[str, Any]]:
    """A long chat with a system message after the user message of every ``every``-th turn."""
    messages: list[dict[str, Any]] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Turn {turn}: tell me about step {turn} of buying."})
        if turn % every == 1:
            messages.append({"role": "system", "content": [{"type": "text", "text": f"Reminder {turn}: {RULE}"}]})
        if turn < turns - 1:
            messages.append({"role": "assistant", "content": FILLER})
    return messages


def prune(body: dict[str, Any]) -> dict[str, Any]:
    stage = PruningStage(PruningSettings(enabled=True, trigger_tokens=600, target_tokens=300), PriceBook.bundled())
    seen: list[dict[str, Any]] = []

    async def terminal(ctx: RequestContext) -> Reply:
        seen.append(ctx.body)
        return Reply(status=200, headers=[], body=b"{}", usage=Usage(count_request_tokens(ctx.body), 10))

    ctx = RequestContext(request_id="r", endpoint="messages", body=body, raw_body=orjson.dumps(body))
    asyncio.run(Pipeline([stage], terminal)(ctx))
    return seen[0]


def test_pruning_keeps_every_system_message_verbatim_and_in_place() -> None:
    body = request(*conversation(30, every=7), system="You are Maya.")
    validate_messages_request(body, strict=True)
    pruned = prune(body)
    assert len(pruned["messages"]) < len(body["messages"])  # turns without one were dropped
    validate_messages_request(pruned, strict=True)

    def around(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """Each system message with the user message before it (its own text: the memory may go first in it)
        and the message after it."""
        out = []
        for i, m in enumerate(messages):
            if m["role"] == "system":
                before = messages[i - 1]
                blocks = [{"type": "text", "text": c} for c in [before["content"]]] if isinstance(
                    before["content"], str) else before["content"]  # fmt: skip
                after = orjson.dumps(messages[i + 1]) if i + 1 < len(messages) else None
                out.append((before["role"], blocks[-1]["text"], orjson.dumps(m), after))
        return out

    assert around(pruned["messages"]) == around(body["messages"])  # same bytes, same neighbours
    originals = [m for m in body["messages"] if m["role"] == "system"]
    assert [m for m in pruned["messages"] if m["role"] == "system"] == originals
    assert all(any(m is o for m in pruned["messages"]) for o in originals)  # the caller's own objects


def test_pruning_leaves_a_shape_it_does_not_know_alone() -> None:
    messages = conversation(30, every=100)
    messages[3] = {"role": "developer", "content": "a role from the future"}
    body = request(*messages)
    assert prune(body) is body
