"""Run the real-estate assistant offline: the simulator stands in for the Anthropic API.

    .venv/bin/python -m examples.real_estate.run            # from the repository root

With a real key, drop the simulator and build the clients with ``anthropic.AsyncAnthropic()`` instead;
everything else stays as it is. The ledger (``examples-real-estate.db`` here) records every request by
feature (lead-chat, lead-scoring, property-match), with what each optimization saved.
"""

from __future__ import annotations

import argparse
import asyncio
import random
from pathlib import Path
from typing import Any

import anthropic

import clawback
from clawback.bench.savings import optimization_names, with_optimizations
from clawback.config import Settings, SimulatorSettings
from clawback.serving import BackgroundServer
from clawback.storage.ledger import LedgerReader
from clawback.upstream.simulator.app import create_simulator_app
from clawback.workloads.real_estate import _lead_form, load_data
from examples.real_estate.assistant import ConversationManager, LeadScorer, PropertyMatcher

LEAD_TURNS = [
    "Hi! We're starting to look for a house in Lakeview and saw your listings online.",
    "Our budget tops out at $512,900, including closing costs if possible.",
    "We need at least 3 bedrooms because the kids each want their own room.",
    "For areas, we're thinking Cedar Grove or Willow Park only.",
    "We have a golden retriever named Biscuit, so that matters for condos.",
    "How do viewings usually work with your agency?",
    "Given everything I've told you, which of your current listings would you shortlist for us?",
    "Can you draft the hand-off summary for the agent now?",
]


def settings_for(ledger: Path) -> Settings:
    """Every optimization on; the ledger in a local SQLite file."""
    base = Settings(ledger={"url": f"sqlite:///{ledger}", "journal_path": str(ledger) + ".journal"})
    return with_optimizations(base, set(optimization_names()))


async def run(base_url: str, ledger: Path, *, leads: int = 40, questions: int = 3) -> dict[str, Any]:
    settings = settings_for(ledger)

    def client(feature: str) -> anthropic.AsyncAnthropic:
        plain = anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-ant-example", max_retries=2)
        return clawback.wrap(plain, settings=settings, labels={"feature": feature, "team": "brightwater"})

    chat_client, scoring_client, matching_client = client("lead-chat"), client("lead-scoring"), client("property-match")
    try:
        chat = ConversationManager(chat_client)
        answers = [await chat.reply("lead-ana", turn) for turn in LEAD_TURNS]

        rng = random.Random(7)
        forms = [_lead_form(rng, load_data()) for _ in range(leads)]
        scores = await LeadScorer(scoring_client, concurrency=8).score_all(forms)

        matcher = PropertyMatcher(matching_client)
        asked = ["3 bedrooms in Cedar Grove under $600,000?", "Anything in Old Mill near the station?"]
        matches = [await matcher.ask(q) for q in (asked * questions)[:questions]]
    finally:
        for c in (chat_client, scoring_client, matching_client):
            await c.close()  # flushes the ledger
    return {"answers": answers, "scores": scores, "matches": matches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ledger", type=Path, default=Path("examples-real-estate.db"))
    parser.add_argument("--leads", type=int, default=40)
    args = parser.parse_args()
    with BackgroundServer(create_simulator_app(SimulatorSettings(output_tokens=120))) as simulator:
        result = asyncio.run(run(simulator.url, args.ledger, leads=args.leads))
    print(f"chat: {len(result['answers'])} turns; scored {len(result['scores'])} leads; "
          f"{len(result['matches'])} property questions")  # fmt: skip
    with LedgerReader(f"sqlite:///{args.ledger}") as reader:
        by_feature: dict[str, list[int]] = {}
        for row in reader.rows():
            spent, would_have = by_feature.setdefault(row.feature or "-", [0, 0])
            by_feature[row.feature or "-"] = [spent + row.cost_micro_usd, would_have + row.counterfactual_micro_usd]
        for feature, (spent, would_have) in sorted(by_feature.items()):
            print(f"  {feature:<15} ${spent / 1e6:.4f} (would have been ${would_have / 1e6:.4f})")


if __name__ == "__main__":
    main()
