"""Cache-aware fan-out on the batch lead-scoring workload: write premiums paid with and without it.

``clawback bench savings`` replays a workload one request at a time, so concurrent requests never meet there.
A scoring job runs with parallel workers, though: this replays the reference ``lead_scoring`` workload in waves
of ``--concurrency`` simultaneous requests through a gateway (prompt-cache planner on) in front of the simulator
(``ttft_ms`` 200, so the waves really overlap), once with ``prompt_cache.fanout`` and once without, a fresh
simulator each time, and prints the cache-write tokens, the write premium (write price - input price, the
pricing module's rates for the model) and the total bill.

    .venv/bin/python benchmarks/fanout_bench.py              # 300 requests in waves of 20, ~20 s
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import orjson

from clawback.config import PromptCacheSettings, Settings, SimulatorSettings
from clawback.gateway.app import create_gateway_app
from clawback.pricing import load_price_book
from clawback.serving import BackgroundServer
from clawback.storage.keys import KeyStore
from clawback.upstream.simulator.app import create_simulator_app
from clawback.workloads import build_workload


async def replay(url: str, key: str, requests: list[dict[str, Any]], concurrency: int) -> None:
    async with httpx.AsyncClient(base_url=url, headers={"x-api-key": key}, timeout=60) as client:
        for start in range(0, len(requests), concurrency):
            wave = requests[start : start + concurrency]
            replies = await asyncio.gather(*(client.post("/v1/messages", content=orjson.dumps(r)) for r in wave))
            assert all(r.status_code == 200 for r in replies), [r.text for r in replies if r.status_code != 200]


def run(fanout: bool, requests: list[dict[str, Any]], concurrency: int) -> dict[str, Any]:
    book = load_price_book()
    with (
        tempfile.TemporaryDirectory() as tmp,
        BackgroundServer(create_simulator_app(SimulatorSettings(ttft_ms=200))) as sim,
    ):
        settings = Settings(
            upstream={"url": sim.url},
            ledger={"url": f"sqlite:///{Path(tmp) / 'l.db'}", "journal_path": str(Path(tmp) / "j")},
            prompt_cache=PromptCacheSettings(enabled=True, fanout=fanout),
        )
        with BackgroundServer(create_gateway_app(settings)) as gw:
            _, key = KeyStore(settings.ledger.url).create("bench", {})
            asyncio.run(replay(gw.url, key, requests, concurrency))
        billed = httpx.get(sim.url + "/_simulator/requests").json()
    premium = cost = Decimal(0)
    tokens = 0
    for row in billed:
        price = book.get(row["model"])
        split = row["usage"]["cache_creation"]
        w5, w1h = split["ephemeral_5m_input_tokens"], split["ephemeral_1h_input_tokens"]
        tokens += w5 + w1h
        premium += (w5 * (price.cache_write_5m - price.input) + w1h * (price.cache_write_1h - price.input)) / 10**6
        cost += Decimal(row["cost_micro_usd"]) / 10**6
    return {"fanout": fanout, "requests": len(billed), "write_tokens": tokens, "write_premium_usd": float(premium),
            "cost_usd": float(cost)}  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--scale", type=float, default=1.0)
    args = parser.parse_args()
    requests = [step.request for step in build_workload("lead_scoring", seed=0, scale=args.scale)]
    for fanout in (False, True):
        r = run(fanout, requests, args.concurrency)
        print(f"fan-out {'on ' if fanout else 'off'}: {r['requests']} requests in waves of {args.concurrency}: "
              f"cache writes {r['write_tokens']:,} tokens, write premium ${r['write_premium_usd']:.4f}, "
              f"bill ${r['cost_usd']:.4f}", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
