"""The official TypeScript SDK (``@anthropic-ai/sdk``, pinned in ``tests/clients``) through the gateway.

``tests/clients/sdk_calls.mjs`` makes a plain call, a streamed call, a tool call answered with its result and a
call with a mid-conversation system message; this test runs it with node against the gateway in front of the
simulator and checks what the SDK saw, that every body reached the simulator byte for byte, and the ledger.
"""

from __future__ import annotations

import json
import os
import subprocess

from clawback.storage.ledger import LedgerReader
from tests.conftest import wait_for
from tests.e2e.real_clients import CLIENTS, client_version, node_binary

MODEL = "claude-sonnet-4-6"


def test_plain_streamed_tool_and_system_calls(gateway, gateway_key, gateway_settings, sim_admin) -> None:
    client_version("@anthropic-ai/sdk")  # fails, saying why, when it is not installed
    env = {**os.environ, "CLAWBACK_URL": gateway.url, "CLAWBACK_KEY": gateway_key, "CLAWBACK_MODEL": MODEL}
    run = subprocess.run([node_binary(), "sdk_calls.mjs"], cwd=CLIENTS, env=env, capture_output=True, text=True,
                         timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    seen = json.loads(run.stdout)

    assert seen["plain"]["text"].startswith("Simulated reply to: Hello from the TypeScript SDK")
    assert seen["plain"]["stop_reason"] == "end_turn" and seen["plain"]["usage"]["output_tokens"] > 0
    streamed = seen["streamed"]
    assert streamed["events"][0] == "message_start" and streamed["events"][-1] == "message_stop"
    assert "content_block_delta" in streamed["events"] and streamed["text"] == streamed["deltas"]
    assert streamed["text"].startswith("Simulated reply to: Stream me a reply")
    assert seen["tool"] == {
        "stop_reason": "tool_use",
        "name": "get_listing",
        "input": {"id": seen["tool"]["input"]["id"]},
    }
    assert seen["answer"]["stop_reason"] == "end_turn" and seen["answer"]["text"]
    assert seen["system"]["stop_reason"] == "end_turn"

    received = [r for r in sim_admin.get("/_simulator/received").json() if r["path"] == "/v1/messages"]
    assert [r["body"] for r in received] == seen["sent"]  # forwarded byte for byte
    assert len(received) == 5
    billed = {b["request_id"]: b for b in sim_admin.get("/_simulator/requests").json()}
    with LedgerReader(gateway_settings.ledger.url) as reader:
        rows = wait_for(lambda: (r := reader.rows()) and len(r) == 5 and r)
    assert sorted(r.upstream_request_id or "" for r in rows) == sorted(billed)
    assert all(r.status == 200 and r.cost_micro_usd == billed[r.upstream_request_id or ""]["cost_micro_usd"] > 0
               for r in rows)  # fmt: skip
