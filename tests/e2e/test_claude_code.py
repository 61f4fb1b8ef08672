"""Today's Claude Code, unchanged, through ``clawback serve`` in front of ``clawback simulate``.

Claude Code (the npm package pinned in ``tests/clients``) runs non-interactively (``claude -p``) with its
documented gateway settings: ``ANTHROPIC_BASE_URL`` at the gateway, ``ANTHROPIC_AUTH_TOKEN`` a clawback key,
nonessential traffic off, a fresh ``HOME``. The simulator's scripted replies (``reply_mode: script``) make it
call its Bash tool, which it really runs, and then answer with what the tool printed. Current Claude Code sends
``role: "system"`` messages inside ``messages`` (its environment block, with a per-message ``output_config``):
every request must be accepted the first time (before issue 20 the first one was refused with a 400 and Claude
Code fell back to a degraded request), and the ledger must hold one row per request, priced exactly as the
simulator billed it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from clawback.storage.ledger import LedgerReader
from tests.conftest import wait_for
from tests.e2e.real_clients import Stack, claude_binary, running_stack

MARKER_REPLY = "The marker command printed clawback-marker-42."
HELLO_REPLY = "Hello from the clawback simulator."
SCRIPT = """
- match: 'check the marker'
  tool: Bash
  input: {command: "echo clawback-marker-$((6*7))", description: "Print the marker"}
  reply: "The marker command printed {tool_result}."
- match: 'say hello'
  reply: "Hello from the clawback simulator."
"""


@pytest.fixture
def stack(tmp_path: Path):
    script = tmp_path / "script.yaml"
    script.write_text(SCRIPT)
    config = f"simulator:\n  reply_mode: script\n  script_file: {script}\n  output_tokens: 40\n  seed: 7\n"
    with running_stack(tmp_path, config) as running:
        yield running


def claude(stack: Stack, tmp_path: Path, prompt: str, *extra: str) -> subprocess.CompletedProcess[str]:
    home, project = tmp_path / "home", tmp_path / "project"
    home.mkdir(exist_ok=True)
    project.mkdir(exist_ok=True)
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "ANTHROPIC_BASE_URL": stack.gateway_url,
        "ANTHROPIC_AUTH_TOKEN": stack.key,  # sent as Authorization: Bearer; no ANTHROPIC_API_KEY (auth conflict)
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }
    command = [str(claude_binary()), "-p", prompt, "--allowedTools", "Bash(echo:*)", *extra]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=180)


def bodies(stack: Stack) -> list[dict[str, Any]]:
    return [orjson.loads(r["body"]) for r in stack.received() if r["path"] == "/v1/messages"]


def test_claude_p_prints_the_simulators_reply(stack: Stack, tmp_path: Path) -> None:
    result = claude(stack, tmp_path, "Say hello")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(HELLO_REPLY), result.stdout
    billed = [b for b in stack.billed() if b["endpoint"] == "messages"]
    assert billed and all(b["status"] == 200 for b in billed), billed  # accepted the first time, no fallback
    with LedgerReader(stack.ledger_url) as reader:
        rows = wait_for(lambda: (r := reader.rows()) and len(r) >= len(billed) and r, timeout=10)
    assert [r.status for r in rows] == [200] * len(billed)  # nor refused by the gateway
    first = bodies(stack)[0]
    systems = [m for m in first["messages"] if m["role"] == "system"]
    assert systems, (
        "no request with a role: system message reached the simulator: refused on the way (Claude Code then falls "
        "back to a request without one), or this Claude Code no longer sends one (then this test covers less)"
    )


def test_a_multi_turn_session_with_tool_calls_is_recorded_as_billed(stack: Stack, tmp_path: Path) -> None:
    first = claude(stack, tmp_path, "Please check the marker")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith(MARKER_REPLY), first.stdout
    second = claude(stack, tmp_path, "Check the marker once more", "--continue")
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.startswith(MARKER_REPLY), second.stdout

    sent = bodies(stack)
    results = [b for m in sent[-1]["messages"] if isinstance(m["content"], list) for b in m["content"]
               if b.get("type") == "tool_result"]  # fmt: skip
    assert len(results) == 2  # both turns' Bash calls, in the resumed conversation's history
    assert any(m["role"] == "system" for m in sent[-1]["messages"])
    billed = {b["request_id"]: b for b in stack.billed()}
    assert len(billed) >= 4 and all(b["status"] == 200 for b in billed.values())
    with LedgerReader(stack.ledger_url) as reader:
        rows = wait_for(lambda: (r := reader.rows()) and len(r) >= len(billed) and r, timeout=10)
    assert sorted(r.upstream_request_id or "" for r in rows) == sorted(billed)  # one row per request
    for row in rows:
        bill = billed[row.upstream_request_id or ""]
        usage = bill["usage"]
        assert row.cost_micro_usd == bill["cost_micro_usd"] > 0
        assert (row.input_tokens, row.output_tokens, row.cache_read_input_tokens) == (
            usage["input_tokens"], usage["output_tokens"], usage["cache_read_input_tokens"])  # fmt: skip
        assert row.cache_write_5m_input_tokens + row.cache_write_1h_input_tokens == usage[
            "cache_creation_input_tokens"]  # fmt: skip
        assert row.model == bill["model"] and row.status == 200
