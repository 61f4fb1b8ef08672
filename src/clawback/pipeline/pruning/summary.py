"""The optional summarizer: a cheap model condenses the dropped turns, once per compaction point.

It is off by default (``fact_memory: extractive``). When on, the summary request goes through the same
pipeline as any other (so the ledger books its cost, under the caller's key, with the label
``pruning=summary``), and the result is stored under a hash of the history it replaces: the next turns of the
conversation find it there and never ask again, so the prefix stays byte-identical between compaction points
(``pruning.summary_store: redis`` shares them between gateway replicas: ``clawback.storage.summary_store``).
If the summary call fails, the extractive memory is stored instead for that point, for the same reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson

from clawback.api.errors import ApiError
from clawback.config import PruningSettings
from clawback.pipeline.context import Decision, Reply, RequestContext, new_request_id
from clawback.pipeline.pruning.conversation import message_text
from clawback.storage.summary_store import MemorySummaryStore, RedisSummaryStore, SummaryStore

__all__ = ["Summarizer", "make_summary_store", "transcript"]

log = logging.getLogger("clawback.pruning")

_SYSTEM = (
    "You condense the earlier part of a conversation so that an assistant can continue it without the full "
    "history. List every fact the user stated (numbers, amounts, dates, names, places, preferences, constraints, "
    "decisions, commitments made to them) as short bullet points, verbatim figures, no commentary."
)
_FORWARDED = frozenset({"anthropic-version"})


def transcript(messages: Sequence[tuple[int, Mapping[str, Any]]]) -> str:
    """The dropped turns as plain text for the summarizer (text and tool results, no thinking, no media)."""
    lines: list[str] = []
    for turn, message in messages:
        text = message_text(message, include_tool_results=True).strip()
        if text:
            lines.append(f"[turn {turn + 1}] {str(message.get('role', '')).capitalize()}: {text}")
    return "\n".join(lines)


class Summarizer:
    """Asks ``model`` for a summary through ``pipeline`` (set by ``PruningStage.bind`` once the pipeline exists)."""

    def __init__(self) -> None:
        self.pipeline: Callable[[RequestContext], Awaitable[Reply]] | None = None

    async def summarize(self, ctx: RequestContext, model: str, max_tokens: int, text: str) -> str | None:
        if self.pipeline is None:
            return None
        body = {
            "model": model,
            "max_tokens": max_tokens,
            "system": _SYSTEM,
            "messages": [{"role": "user", "content": f"Conversation so far:\n\n{text}"}],
        }
        tenant = replace(ctx.tenant, labels={**ctx.tenant.labels, "pruning": "summary"})
        sub = RequestContext(
            request_id=new_request_id(), endpoint="messages", body=body, raw_body=None, path="/v1/messages",
            headers=[(k, v) for k, v in ctx.headers if k.lower() in _FORWARDED], tenant=tenant,
            decision=(ctx.decision or Decision()).with_mode("pruning", "off"), upstream_auth=dict(ctx.upstream_auth),
        )  # fmt: skip
        try:
            reply = await self.pipeline(sub)
        except ApiError as exc:
            log.warning("pruning summary failed (%s): using the extractive memory", exc.error_type)
            return None
        if reply.status != 200 or reply.body is None:
            log.warning("pruning summary failed (HTTP %s): using the extractive memory", reply.status)
            return None
        try:
            content = orjson.loads(reply.body).get("content") or []
        except (orjson.JSONDecodeError, AttributeError):
            return None
        text_out = "\n".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
        return text_out.strip() or None


def make_summary_store(settings: PruningSettings) -> SummaryStore:
    """The store ``settings.summary_store`` names."""
    if settings.summary_store == "redis":
        return RedisSummaryStore(settings.summary_redis_url, prefix=settings.summary_redis_prefix,
                                 ttl_s=settings.summary_ttl_s)  # fmt: skip
    return MemorySummaryStore()
