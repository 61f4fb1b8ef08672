"""The default shadow's shortcut (``_nothing_to_prune``) never says "nothing" where ``plan_pruning`` would prune.

Checked on every prefix of every labelled conversation (lead chats, agent and coding sessions with tool results),
under the shipped policy and under tighter ones, so that a change to the window's rules that the shortcut does not
follow fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from clawback.config import PruningSettings
from clawback.pipeline.pruning.pruner import plan_pruning
from clawback.pipeline.pruning.stage import _nothing_to_prune
from clawback.workloads.conversations import CONVERSATION_MODEL, load_conversations

DATA = Path(__file__).resolve().parents[2] / "src" / "clawback" / "workloads" / "data" / "conversations"


@pytest.mark.parametrize("overrides", [{}, {"keep_recent_turns": 1, "trigger_tokens": 1, "target_tokens": 0},
                                       {"keep_first_turns": 1, "trigger_turns": 1}])  # fmt: skip
def test_the_shortcut_agrees_with_the_planner_on_every_prefix(overrides: dict[str, object]) -> None:
    policy = PruningSettings(enabled=True, **overrides)
    shortcuts = 0
    for path in sorted(DATA.glob("*.jsonl")):
        for conversation in load_conversations(path):
            messages = conversation.messages()
            for end in range(1, len(messages) + 1, 2):  # each request a client would send: ends on a user turn
                body = conversation.request(messages[:end], CONVERSATION_MODEL)
                if _nothing_to_prune(body, policy):
                    shortcuts += 1
                    assert plan_pruning(body, policy, rates=None) is None, (conversation.id, end)
    assert shortcuts > 50  # the shortcut was taken at all (the first requests of each chat)
