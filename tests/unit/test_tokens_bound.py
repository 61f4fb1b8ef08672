"""``message_tokens_at_most`` is never below what ``message_prompt_blocks`` counts (the planner's fast path decides
"too short to cache" on it, so a bound below the count would skip a request that could have been cached)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from clawback.tokens import message_prompt_blocks, message_tokens_at_most
from clawback.workloads.conversations import CONVERSATION_MODEL, load_conversations

DATA = Path(__file__).resolve().parents[2] / "src" / "clawback" / "workloads" / "data" / "conversations"
MODELS = ["claude-sonnet-4-5-20250929", "claude-opus-4-7", "claude-haiku-4-5", "not-a-claude-model"]


def counted(body: dict[str, Any]) -> int:
    blocks, _ = message_prompt_blocks(body)
    return sum(pb.tokens for pb in blocks)


_text = st.text(st.characters(codec="utf-8"), max_size=300)
_block = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, _text),
    st.builds(lambda t: {"type": "thinking", "thinking": t, "signature": "s"}, _text),
    st.builds(lambda n, i: {"type": "tool_use", "id": "toolu_1", "name": n, "input": {"q": i}}, _text, _text),
    st.builds(lambda t: {"type": "tool_result", "tool_use_id": "toolu_1", "content": t}, _text),
    st.builds(
        lambda t: {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": t}]}, _text
    ),
)
_message = st.builds(
    lambda role, content: {"role": role, "content": content},
    st.sampled_from(["user", "assistant"]),
    st.one_of(_text, st.lists(_block, max_size=4)),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_message, max_size=6), st.sampled_from(MODELS), st.booleans())
def test_the_bound_is_never_below_the_count(messages: list[dict[str, Any]], model: str, thinking: bool) -> None:
    body: dict[str, Any] = {"model": model, "max_tokens": 10, "messages": messages}
    if thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": 2048}
    bound = message_tokens_at_most(body)
    assert bound is not None and bound >= counted(body)


def test_a_marker_leaves_no_bound() -> None:
    marked = {"type": "text", "text": "hello", "cache_control": {"type": "ephemeral"}}
    body = {"model": MODELS[0], "messages": [{"role": "user", "content": [marked]}]}
    assert message_tokens_at_most(body) is None


def test_the_bound_holds_on_every_labelled_conversation() -> None:
    checked = 0
    for path in sorted(DATA.glob("*.jsonl")):
        for conversation in load_conversations(path):
            messages = conversation.messages()
            for end in range(1, len(messages) + 1, 2):
                body = conversation.request(messages[:end], CONVERSATION_MODEL)
                bound = message_tokens_at_most(body)
                if bound is None:
                    continue
                assert bound >= counted(body), (conversation.id, end)
                checked += 1
    assert checked > 100
