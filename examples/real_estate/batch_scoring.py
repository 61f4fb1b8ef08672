"""Scoring a pile of leads two ways with clawback: now (``clawback.agather``) and overnight (``defer=True``).

    .venv/bin/python -m examples.real_estate.batch_scoring --leads 200     # from the repository root

Interactive: every lead is scored at once through the wrapped client; the dispatch stage under it keeps the calls
within the upstream's limits (here the simulator's: ``--concurrency-limit`` calls in progress, ``--latency-ms``
each), retries what fails, and the prompt-cache planner caches the long shared instructions.
Overnight: the same requests go to the Message Batches API at half price, as they are and with the shared
instructions marked for the 1-hour prompt cache (batch items never pass clawback's planner); the simulator finishes
a batch after ``--batch-s`` seconds (the real API takes minutes to hours, up to 24 h). Each prints its wall time and
what the ledger booked, so the README's comparison is measured, not assumed.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import anthropic

import clawback
from clawback.config import Settings, SimulatorSettings
from clawback.serving import BackgroundServer
from clawback.storage.ledger import LedgerReader
from clawback.upstream.simulator.app import create_simulator_app
from clawback.workloads.real_estate import _lead_form, load_data
from examples.real_estate.assistant import LeadScorer, parse_score


def overnight_request(request: dict[str, Any]) -> dict[str, Any]:
    """A batch item with its shared instructions marked for the 1-hour prompt cache, as the Batches docs advise:
    batch items bypass clawback's planner (they never pass the pipeline), so the breakpoint is the caller's."""
    system = [{"type": "text", "text": request["system"], "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    return {**request, "system": system}


async def score(base_url: str, ledger: Path, forms: list[str], *, defer: bool, cached: bool = True) -> dict[str, Any]:
    settings = Settings(ledger={"url": f"sqlite:///{ledger}", "journal_path": str(ledger) + ".journal"})
    plain = anthropic.AsyncAnthropic(base_url=base_url, api_key="sk-ant-example", max_retries=0)
    feature = "lead-scoring-overnight" if defer else "lead-scoring"
    async with clawback.wrap(plain, settings=settings, labels={"feature": feature}) as client:
        scorer = LeadScorer(client)
        started = time.monotonic()
        requests = [scorer.request(f) for f in forms]
        if defer and cached:
            requests = [overnight_request(r) for r in requests]
        outcomes = await clawback.agather(client, requests, defer=defer, poll_initial_s=0.5, progress=None)
        wall = time.monotonic() - started
    scores = [parse_score(o.message) for o in outcomes if o.message is not None]
    with LedgerReader(settings.ledger.url) as reader:
        rows = [r for r in reader.rows() if r.feature == feature]
    mode = "interactive (gather)"
    if defer:
        mode = "overnight, 1 h cache mark" if cached else "overnight, as is"
    return {
        "mode": mode,
        "leads": len(forms),
        "scored": len(scores),
        "failed": len(forms) - len(scores),
        "wall_s": round(wall, 2),
        "ledger_rows": len(rows),
        "cost_usd": sum(r.cost_micro_usd for r in rows) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=1000.0)
    parser.add_argument("--concurrency-limit", type=int, default=50)
    parser.add_argument("--batch-s", type=float, default=5.0)
    args = parser.parse_args()
    rng = random.Random(7)
    forms = [_lead_form(rng, load_data()) for _ in range(args.leads)]
    simulator = SimulatorSettings(
        seed=7, output_tokens=120, ttft_ms=args.latency_ms, max_concurrent_requests=args.concurrency_limit,
        batch_processing_s=args.batch_s,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        for defer, cached in ((False, True), (True, False), (True, True)):
            with BackgroundServer(create_simulator_app(simulator)) as sim:
                ledger = Path(tmp) / f"ledger-{defer}-{cached}.db"
                results.append(asyncio.run(score(sim.url, ledger, forms, defer=defer, cached=cached)))
    for r in results:
        print(f"{r['mode']:<28} {r['scored']}/{r['leads']} scored, {r['failed']} failed, {r['wall_s']:.1f} s, "
              f"{r['ledger_rows']} ledger rows, ${r['cost_usd']:.4f}")  # fmt: skip


if __name__ == "__main__":
    main()
