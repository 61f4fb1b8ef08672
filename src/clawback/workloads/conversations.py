"""Labelled conversations from a JSONL file, replayed as a client would send them.

One conversation a line::

    {"id": "...", "system": "...", "turns": [{"user": ..., "assistant": ...}, ...], "final_user": ...,
     "needed_facts": ["$610,000", ...], "stale_facts": ["under 575", ...], "tools": [...]}

``user`` / ``assistant`` / ``final_user`` are a string or a list of content blocks (``text``, ``tool_use``,
``tool_result``, ...); ``tools`` is optional. ``needed_facts`` are strings the final answer needs, verbatim as
the conversation states them; ``stale_facts`` are values the conversation later corrected. Unknown keys (a
writer's notes, say) are ignored.

Why a file format beside the generated workloads: the reference workloads come from the team's own generator,
and a pruner tuned on them learns the generator's shapes. Conversations written by someone who never saw the
pruning rules (``data/conversations/``, see its README) are the check against that.

``conversation_workload`` turns the file into a ``Workload``: request ``k`` of a conversation is the system
prompt, the tools, turns ``0..k-1`` and turn ``k``'s user message (a turn is one API round trip: in an agent
session a turn's ``user`` holds the previous ``tool_use``'s results); the last request ends with ``final_user``
and alone carries the labels. Nothing here reads the labels into a request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from clawback.api.errors import InvalidRequestError
from clawback.api.messages import validate_messages_request
from clawback.pipeline.pruning.conversation import is_turn_start
from clawback.tokens import count_request_tokens
from clawback.workloads.model import Step, StepLabels, Workload

__all__ = [
    "CONVERSATION_MODEL",
    "ConversationFileError",
    "LabelProblem",
    "LabelledConversation",
    "conversation_workload",
    "label_problems",
    "load_conversations",
]

CONVERSATION_MODEL = "claude-sonnet-4-6"  # the lead chat's model: what a chat assistant runs on
# Between two requests of a conversation, on the simulated clock (the prompt cache's 5-minute TTL sees them):
# a human's next message a minute later (the lead_chat generator: 15-120 s), an agent's next round trip, which
# answers tool results, 12 s later (the agentic generator: 2-25 s).
_HUMAN_GAP_S = 60.0
_ROUND_TRIP_GAP_S = 12.0
_CONVERSATION_GAP_S = 4 * 3600.0  # between conversations: every cache entry of the previous one has expired

Content = str | list[dict[str, Any]]


class ConversationFileError(ValueError):
    """A conversation file that cannot be scored: which file, which line, what is wrong."""


class _Turn(BaseModel):
    model_config = ConfigDict(extra="ignore")
    user: Content
    assistant: Content


class LabelledConversation(BaseModel):
    """One line of a conversation file (see the module doc)."""

    model_config = ConfigDict(extra="ignore")
    id: str
    system: Content
    turns: list[_Turn]
    final_user: Content
    needed_facts: list[str]
    stale_facts: list[str] = []
    tools: list[dict[str, Any]] | None = None

    def messages(self) -> list[dict[str, Any]]:
        """Every message of the final request, in order."""
        out: list[dict[str, Any]] = []
        for turn in self.turns:
            out.append({"role": "user", "content": turn.user})
            out.append({"role": "assistant", "content": turn.assistant})
        out.append({"role": "user", "content": self.final_user})
        return out

    def request(self, messages: list[dict[str, Any]], model: str) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "max_tokens": 1024, "system": self.system, "messages": messages}
        if self.tools:
            body["tools"] = self.tools
        return body


def load_conversations(path: Path) -> list[LabelledConversation]:
    """Every conversation of ``path`` (blank lines skipped); ``ConversationFileError`` names the first bad line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConversationFileError(f"{path}: cannot read it ({exc})") from None
    found: list[LabelledConversation] = []
    seen: set[str] = set()
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            conversation = LabelledConversation.model_validate(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise ConversationFileError(f"{where}: not JSON ({exc})") from None
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(str(p) for p in problem["loc"]) or "(the line)"
            raise ConversationFileError(f"{where}: {field}: {problem['msg']}") from None
        if conversation.id in seen:
            raise ConversationFileError(f"{where}: id {conversation.id!r} occurs twice")
        seen.add(conversation.id)
        try:
            validate_messages_request(conversation.request(conversation.messages(), CONVERSATION_MODEL), strict=True)
        except InvalidRequestError as exc:
            raise ConversationFileError(
                f"{where} ({conversation.id}): its final request is not one the API accepts: {exc}"
            ) from None
        found.append(conversation)
    if not found:
        raise ConversationFileError(f"{path}: no conversations in it")
    return found


@dataclass(frozen=True, slots=True)
class LabelProblem:
    """A needed fact the score leaves out, and why: one the system prompt or the final message already holds
    (kept whatever pruning does), or one the history never states verbatim (lost before pruning)."""

    conversation: str
    fact: str
    reason: str


def _text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _in(fact: str, value: Any) -> bool:
    return _text(fact)[1:-1] in _text(value)  # as the eval looks for it: the JSON-escaped string


def label_problems(conversation: LabelledConversation) -> list[LabelProblem]:
    """The needed facts that cannot tell a good pruner from a bad one (see ``LabelProblem``)."""
    problems: list[LabelProblem] = []
    history = [[t.user, t.assistant] for t in conversation.turns]
    for fact in conversation.needed_facts:
        if _in(fact, conversation.system) or _in(fact, conversation.final_user):
            problems.append(LabelProblem(conversation.id, fact, "in the system prompt or the final message"))
        elif not _in(fact, history):
            problems.append(LabelProblem(conversation.id, fact, "not stated verbatim in the history"))
    return problems


def conversation_workload(
    conversations: Sequence[LabelledConversation], *, name: str = "conversations", model: str = CONVERSATION_MODEL
) -> Workload:
    """The conversations as a workload of requests, one after another on the simulated clock (see the module
    doc). A needed fact ``label_problems`` reports is left out of the labels."""
    steps: list[Step] = []
    at = 0.0
    replies: list[int] = []
    for conversation in conversations:
        messages = conversation.messages()
        skipped = {p.fact for p in label_problems(conversation)}
        needed = {f"{i}": fact for i, fact in enumerate(conversation.needed_facts) if fact not in skipped}
        last = len(conversation.turns)
        for k in range(last + 1):
            request = conversation.request(messages[: 2 * k + 1], model)
            labels = StepLabels(session=conversation.id)
            if k == last:
                labels = StepLabels(conversation.id, needed, stale_facts=tuple(conversation.stale_facts))
            if k:
                at += _HUMAN_GAP_S if is_turn_start(messages[2 * k]) else _ROUND_TRIP_GAP_S
            steps.append(Step(ref=f"{name}/{conversation.id}/t{k:03d}", at_s=at, request=request, labels=labels))
        for turn in conversation.turns:
            reply = {"role": "assistant", "content": turn.assistant}
            replies.append(count_request_tokens({"model": model, "messages": [reply]}))
        at += _CONVERSATION_GAP_S
    # every reply priced at the file's mean reply length: the same in every set-up, so it shifts no comparison
    output = round(sum(replies) / len(replies)) if replies else 128
    return Workload(
        name,
        "labelled conversations from a file, replayed turn by turn",
        steps,
        output_tokens=max(1, output),
        client_caching="none (the cache set-up adds automatic caching)",
        turns_are_round_trips=True,
    )
