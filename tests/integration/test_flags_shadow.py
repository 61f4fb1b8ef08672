"""Shadow mode through the gateway, against the simulator: nothing the client or the upstream sees changes (the
simulator's raw log, byte for byte, and the replies against a pass-through gateway's), yet the ledger books what
each stage would have saved, apart from the counterfactual."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson

from clawback.config import Settings, SimulatorSettings
from clawback.serving import BackgroundServer
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerReader, LedgerRecord
from clawback.upstream.simulator.app import create_simulator_app
from tests.conftest import wait_for
from tests.integration.test_pruning_gateway import MODEL, turn

STAGES = ("exact_cache", "pruning", "prompt_cache")
# the wall clock in both runs (the rate limits' reset times too), not anything a stage did
VOLATILE_HEADERS = {"date", "x-clawback-request-id", "request-id", "x-request-id", "anthropic-organization-id"}


def settings_for(tmp: Path, upstream: str, mode: str) -> Settings:
    return Settings(
        upstream={"url": upstream},
        ledger={"url": f"sqlite:///{tmp / 'ledger.db'}", "journal_path": str(tmp / "j"), "flush_interval_s": 0.05},
        exact_cache={"enabled": True},
        prompt_cache={"enabled": True},
        pruning={"enabled": True, "trigger_tokens": 400, "target_tokens": 150},
        flags={"initial": dict.fromkeys(STAGES, mode)},
    )


@contextlib.contextmanager
def deployment(tmp: Path, mode: str) -> Iterator[tuple[httpx.Client, httpx.Client, Settings]]:
    """A fresh simulator (same seed every time) and a gateway in front of it with every stage in ``mode``."""
    from clawback.gateway.app import create_gateway_app

    tmp.mkdir()
    with BackgroundServer(create_simulator_app(SimulatorSettings(seed=3))) as simulator:
        settings = settings_for(tmp, simulator.url, mode)
        with BackgroundServer(create_gateway_app(settings)) as gateway:
            _, secret = KeyStore(settings.ledger.url).create("shadow-test")
            with (
                httpx.Client(base_url=gateway.url, headers={"x-api-key": secret}, timeout=30) as client,
                httpx.Client(base_url=simulator.url) as admin,
            ):
                yield client, admin, settings


def traffic() -> list[dict[str, Any]]:
    """A conversation long enough to be pruned and planned, then a deterministic question asked three times
    (plain and streamed), which the exact cache would answer."""
    bodies: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    system = "You are a helpful real-estate assistant. " * 200  # long enough for the planner's breakpoints
    for n in range(10):
        turn(history, n)
        bodies.append({"model": MODEL, "max_tokens": 20, "system": system,
                       "messages": [*history, {"role": "user", "content": "Any news?"}]})  # fmt: skip
    question = {"model": MODEL, "max_tokens": 20, "temperature": 0,
                "messages": [{"role": "user", "content": "What is the HOA fee at 12 Elm St?"}]}  # fmt: skip
    bodies += [question, question, {**question, "stream": True}]
    return bodies


def replay(client: httpx.Client, bodies: list[dict[str, Any]]) -> list[tuple[int, dict[str, str], bytes, bytes]]:
    """Each request's status, stable headers and body, and the exact bytes sent."""
    out = []
    for body in bodies:
        sent = orjson.dumps(body)
        response = client.post("/v1/messages", content=sent, headers={"content-type": "application/json"})
        headers = {k: v for k, v in response.headers.items()
                   if k.lower() not in VOLATILE_HEADERS and not k.lower().endswith("-reset")}  # fmt: skip
        out.append((response.status_code, headers, response.content, sent))
    return out


def ledger_rows(settings: Settings, count: int) -> list[LedgerRecord]:
    def rows() -> list[LedgerRecord] | None:
        with LedgerReader(settings.ledger.url) as reader:
            found = [r for r in reader.rows() if r.endpoint == "messages"]
        return found if len(found) == count else None

    result: list[LedgerRecord] = wait_for(rows)
    return result


def test_shadow_changes_no_byte_yet_books_the_would_be_saving(tmp_path: Path) -> None:
    bodies = traffic()
    with deployment(tmp_path / "shadow", "shadow") as (client, admin, settings):
        shadow = replay(client, bodies)
        upstream = [r for r in admin.get("/_simulator/received").json() if r["path"] == "/v1/messages"]
        shadow_rows = ledger_rows(settings, len(bodies))
    with deployment(tmp_path / "off", "off") as (client, admin, settings):
        plain = replay(client, bodies)
        off_rows = ledger_rows(settings, len(bodies))

    # the upstream received exactly what the client sent: every request, byte for byte, nothing more
    assert [r["body"].encode() for r in upstream] == [sent for *_, sent in shadow]
    # the client got exactly what a pass-through gateway gives: status, headers, body bytes
    assert [(s, h, b) for s, h, b, _ in shadow] == [(s, h, b) for s, h, b, _ in plain]
    assert all(status == 200 for status, *_ in shadow)
    assert not any("x-clawback-cache" in headers for _, headers, *_ in shadow)

    for row, off in zip(shadow_rows, off_rows, strict=True):
        assert row.savings_micro_usd == {} and row.counterfactual_micro_usd == row.cost_micro_usd  # nothing saved
        assert row.cost_micro_usd == off.cost_micro_usd  # billed as pass-through
        assert all(row.labels[f"flag.{stage}"] == "shadow" for stage in STAGES)
        assert off.shadow_savings_micro_usd == {}
    would = {stage: sum(r.shadow_savings_micro_usd.get(stage, 0) for r in shadow_rows) for stage in STAGES}
    assert would["pruning"] > 0 and would["prompt_cache"] > 0, would
    assert any(r.labels.get("pruning", "").startswith("shadow:compacted") for r in shadow_rows)
    # the repeated question: each repeat would have been answered from the cache, saving what the first one cost
    first, *repeats = shadow_rows[-3:]
    assert [r.shadow_savings_micro_usd.get("exact_cache") for r in repeats] == [first.cost_micro_usd] * 2
