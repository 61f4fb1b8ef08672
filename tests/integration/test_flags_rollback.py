"""``clawback rollback all`` while streams are in flight: none fails, those already running finish as they started
(optimized), and the requests that start once the change has reached the gateway go through untouched (the
simulator's raw log equals the client's bytes)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from typer.testing import CliRunner

from clawback.cli import app
from clawback.config import Settings, SimulatorSettings
from clawback.gateway.app import create_gateway_app
from clawback.serving import BackgroundServer
from clawback.storage.keys import KeyStore
from clawback.storage.ledger import LedgerReader, LedgerRecord
from clawback.upstream.simulator.app import create_simulator_app
from tests.conftest import wait_for
from tests.integration.test_pruning_gateway import MODEL, turn

STAGES = ("exact_cache", "pruning", "prompt_cache")
REFRESH_S = 1.0


def conversation() -> list[dict[str, Any]]:
    history: list[dict[str, Any]] = []
    for n in range(8):
        turn(history, n)
    return [*history, {"role": "user", "content": "Any news?"}]


def test_rollback_all_restores_pass_through_with_requests_in_flight(tmp_path: Path) -> None:
    ledger = {
        "url": f"sqlite:///{tmp_path / 'ledger.db'}",
        "journal_path": str(tmp_path / "j"),
        "flush_interval_s": 0.05,
    }
    config = tmp_path / "clawback.yaml"
    config.write_text(yaml.safe_dump({"ledger": ledger}))
    # streams of 40 tokens at 25 ms each: about a second in flight
    simulator_settings = SimulatorSettings(seed=1, output_tokens=40, per_token_ms=25)
    with BackgroundServer(create_simulator_app(simulator_settings)) as simulator:
        settings = Settings(
            upstream={"url": simulator.url}, ledger=ledger, exact_cache={"enabled": True},
            prompt_cache={"enabled": True}, pruning={"enabled": True, "trigger_tokens": 400, "target_tokens": 150},
            flags={"refresh_s": REFRESH_S},
        )  # fmt: skip
        with BackgroundServer(create_gateway_app(settings)) as gateway:
            _, secret = KeyStore(ledger["url"]).create("rollback-test")
            sent: dict[str, tuple[float, float, bytes, int, bool]] = {}
            stop = threading.Event()
            messages = conversation()

            def client(worker: int) -> None:
                with httpx.Client(base_url=gateway.url, headers={"x-api-key": secret}, timeout=30) as http:
                    n = 0
                    while not stop.is_set():
                        marker = f"w{worker}-{n}"
                        n += 1
                        body = orjson.dumps({"model": MODEL, "max_tokens": 40, "stream": True,
                                             "metadata": {"user_id": marker}, "messages": messages})  # fmt: skip
                        started = time.monotonic()
                        headers = {"content-type": "application/json", "x-clawback-user": marker}
                        with http.stream("POST", "/v1/messages", content=body, headers=headers) as response:
                            raw = b"".join(response.iter_bytes())
                            status = response.status_code
                        complete = b"event: message_stop" in raw and b"event: error" not in raw
                        sent[marker] = (started, time.monotonic(), body, status, complete)

            workers = [threading.Thread(target=client, args=(i,)) for i in range(4)]
            for worker in workers:
                worker.start()
            time.sleep(2.5)
            rolled_at = time.monotonic()
            result = CliRunner().invoke(app, ["rollback", "all", "--reason", "incident drill", "--config", str(config)])
            rolled_done = time.monotonic()
            time.sleep(REFRESH_S + 3.0)
            stop.set()
            for worker in workers:
                worker.join()
            upstream = [r for r in httpx.get(f"{simulator.url}/_simulator/received").json()
                        if r["path"] == "/v1/messages"]  # fmt: skip

    assert result.exit_code == 0, result.output
    for stage in STAGES:
        assert f"rolled back {stage}: unset -> off 100%" in result.output
    assert all(status == 200 and complete for _, _, _, status, complete in sent.values()), "a request failed"

    def rows() -> dict[str, LedgerRecord] | None:
        with LedgerReader(ledger["url"]) as reader:
            found = {r.request_id: r for r in reader.rows() if r.endpoint == "messages"}
        return found if len(found) >= len(sent) else None

    records = wait_for(rows)
    by_marker: dict[str, bytes] = {}
    for request in upstream:
        marker = orjson.loads(request["body"])["metadata"]["user_id"]
        by_marker[marker] = request["body"].encode()
    # The gateway takes a request's modes when the request reaches it, which under load can be a moment after the
    # client started its clock: so each request is judged by the modes its ledger row says it ran with, and the
    # client's clock only says which requests must have been on one side of the change or the other.
    modes = {record.user: {record.labels[f"flag.{stage}"] for stage in STAGES} for record in records.values()}
    assert set(modes) == set(sent)
    assert all(len(mode) == 1 for mode in modes.values()), "a request ran with some stages on and some off"
    ran_on = {marker for marker, mode in modes.items() if mode == {"on"}}
    before = [m for m, (start, end, *_) in sent.items() if end < rolled_at]
    after = [m for m, (start, *_) in sent.items() if start > rolled_done + REFRESH_S + 0.5]
    # on when it reached the gateway and still streaming once the rollback was written: it finished as it began
    in_flight = [m for m in ran_on if sent[m][1] > rolled_done]
    assert in_flight and after and before, (len(in_flight), len(after), len(before))
    assert set(before) <= ran_on and not set(after) & ran_on
    # optimized when on (the planner's breakpoints), untouched when off: the bytes the client sent, exactly
    assert all((by_marker[m] != sent[m][2]) == (m in ran_on) for m in sent)
    print(f"\n{len(sent)} streams, {len(in_flight)} in flight through the rollback, {len(after)} after it, none failed")
