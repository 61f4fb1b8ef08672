"""A small real-estate assistant built on the Anthropic SDK, with clawback underneath.

Three parts, each an ordinary SDK client user:

- ``ConversationManager`` keeps every lead's whole conversation and sends all of it on each turn. It does
  not trim history by hand: clawback's pipeline (pruning, prompt-cache breakpoints) decides what the model
  needs to see and what can be cached, and the ledger records what that saved.
- ``LeadScorer`` scores many leads concurrently (bounded), all sharing one long instruction prefix.
- ``PropertyMatcher`` answers matching questions with a tool round trip: the model calls
  ``search_listings``, the app runs the search locally, the model answers from the result.

The clients are made with ``clawback.wrap(anthropic.AsyncAnthropic(...))`` in ``run.py``; nothing here knows
about clawback, which is the point.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

import anthropic

from clawback.workloads.real_estate import listing_line, listings, scoring_prefix, system_prompt

MODEL = "claude-sonnet-4-6"
SCORING_MODEL = "claude-haiku-4-5"


def _text(message: Any) -> str:
    return "".join(block.text for block in message.content if block.type == "text")


class ConversationManager:
    """One lead conversation per lead id; the whole history goes out on every turn."""

    def __init__(self, client: anthropic.AsyncAnthropic, *, model: str = MODEL) -> None:
        self.client = client
        self.model = model
        self.system = [{"type": "text", "text": system_prompt(), "cache_control": {"type": "ephemeral"}}]
        self.histories: dict[str, list[dict[str, Any]]] = {}

    async def reply(self, lead_id: str, text: str) -> str:
        history = self.histories.setdefault(lead_id, [])
        history.append({"role": "user", "content": text})
        message = await self.client.messages.create(
            model=self.model,
            max_tokens=1024,
            system=self.system,  # type: ignore[arg-type]
            messages=history,  # type: ignore[arg-type]
            metadata={"user_id": lead_id},
        )
        answer = _text(message)
        history.append({"role": "assistant", "content": answer})
        return answer


def parse_score(message: Any) -> dict[str, Any]:
    text = _text(message)
    try:
        parsed: dict[str, Any] = json.loads(text)
    except ValueError:
        parsed = {"raw": text}  # the simulator does not write JSON; a real model does
    return parsed


class LeadScorer:
    """Score leads concurrently; at most ``concurrency`` requests in flight."""

    def __init__(self, client: anthropic.AsyncAnthropic, *, concurrency: int = 8, model: str = SCORING_MODEL) -> None:
        self.client = client
        self.model = model
        self.limit = asyncio.Semaphore(concurrency)
        self.prefix = scoring_prefix()

    def request(self, lead_form: str) -> dict[str, Any]:
        """The ``messages.create`` arguments that score one lead (also what ``batch_scoring.py`` gathers)."""
        return {
            "model": self.model,
            "max_tokens": 300,
            "system": self.prefix,
            "messages": [{"role": "user", "content": lead_form}],
        }

    async def score(self, lead_form: str) -> dict[str, Any]:
        async with self.limit:
            message = await self.client.messages.create(**self.request(lead_form))
        return parse_score(message)

    async def score_all(self, lead_forms: Sequence[str]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.score(form) for form in lead_forms)))


SEARCH_TOOL = {
    "name": "search_listings",
    "description": "Search the agency's current listings by area, minimum bedrooms and maximum price.",
    "input_schema": {
        "type": "object",
        "properties": {
            "area": {"type": "string", "description": "Neighbourhood name, or empty for any"},
            "min_beds": {"type": "integer"},
            "max_price": {"type": "integer", "description": "US dollars; 0 for no limit"},
        },
        "required": ["area"],
    },
}


def search_listings(area: str = "", min_beds: int = 0, max_price: int = 0) -> list[str]:
    """The app's own search (no model involved)."""
    found = []
    for item in listings():
        if area and area.lower() not in item["area"].lower():
            continue
        if item["beds"] < min_beds or (max_price and item["price"] > max_price):
            continue
        found.append(listing_line(item))
    return found or [listing_line(item) for item in listings()[:3]]


class PropertyMatcher:
    """A question, the model's ``search_listings`` call, the local search, the model's answer."""

    def __init__(self, client: anthropic.AsyncAnthropic, *, model: str = MODEL) -> None:
        self.client = client
        self.model = model
        self.system = "You match buyers with Brightwater Realty listings. Use search_listings; quote listing ids."

    async def ask(self, question: str) -> str:
        messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
        tools = [SEARCH_TOOL]
        for _ in range(4):  # a bounded agent loop
            message = await self.client.messages.create(
                model=self.model, max_tokens=1024, system=self.system,
                tools=tools, messages=messages,  # type: ignore[arg-type]
            )  # fmt: skip
            calls = [block for block in message.content if block.type == "tool_use"]
            if not calls:
                return _text(message)
            messages.append({"role": "assistant", "content": [block.model_dump() for block in message.content]})
            results = []
            for call in calls:
                args = call.input if isinstance(call.input, dict) else {}
                area = str(args.get("area", ""))
                lines = search_listings(
                    area if any(area.lower() in i["area"].lower() for i in listings()) else "",
                    int(args.get("min_beds", 0) or 0),
                    int(args.get("max_price", 0) or 0),
                )
                results.append({"type": "tool_result", "tool_use_id": call.id, "content": "\n".join(lines[:8])})
            messages.append({"role": "user", "content": results})
        return ""
