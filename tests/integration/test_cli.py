"""The ``clawback`` command: keys, configuration errors, and the servers it starts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
from typer.testing import CliRunner

from clawback.cli import app
from clawback.serving import free_port

runner = CliRunner()


def test_keys_create_list_revoke(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAWBACK_LEDGER__URL", f"sqlite:///{tmp_path / 'k.db'}")
    created = runner.invoke(app, ["keys", "create", "crm", "--label", "team=sales", "-l", "feature=scoring"])
    assert created.exit_code == 0, created.output
    secret = created.output.strip().splitlines()[-1]
    key_id = created.output.split()[1]
    assert secret.startswith("cb-") and key_id.startswith("key_")
    listed = runner.invoke(app, ["keys", "list"])
    assert key_id in listed.output and "team=sales" in listed.output and secret not in listed.output
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 0
    assert runner.invoke(app, ["keys", "revoke", key_id]).exit_code == 1
    bad = runner.invoke(app, ["keys", "create", "x", "--label", "nolabel"])
    assert bad.exit_code == 2


def test_bad_configuration_stops_start_up_with_a_clear_message(tmp_path):
    config = tmp_path / "clawback.yaml"
    config.write_text("gateway:\n  port: -1\n")
    result = runner.invoke(app, ["serve", "--config", str(config)])
    assert result.exit_code == 2
    assert "gateway.port" in result.output


def test_a_price_table_that_cannot_be_read_stops_serve_with_its_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAWBACK_LEDGER__URL", f"sqlite:///{tmp_path / 'l.db'}")
    monkeypatch.setenv("CLAWBACK_PRICING__DATA_FILE", str(tmp_path / "missing-prices.yaml"))
    result = runner.invoke(app, ["serve", "--upstream", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    output = result.output.replace("\n", "")  # Rich wraps long lines
    assert "missing-prices.yaml: cannot read the price table" in output
    assert "Traceback" not in output


def test_serve_without_upstream_or_key_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("CLAWBACK_LEDGER__URL", f"sqlite:///{tmp_path / 'k.db'}")
    result = runner.invoke(app, ["serve"])
    assert result.exit_code == 2 and "--upstream" in result.output and "ANTHROPIC_API_KEY" in result.output


def test_simulate_and_serve_commands_run_real_servers(tmp_path):
    sim_port, gw_port = free_port(), free_port()
    env = {**os.environ, "CLAWBACK_LEDGER__URL": f"sqlite:///{tmp_path / 'l.db'}",
           "CLAWBACK_LEDGER__JOURNAL_PATH": str(tmp_path / "j"), "CLAWBACK_GATEWAY__REQUIRE_KEY": "false"}  # fmt: skip
    cli = [sys.executable, "-m", "clawback"]
    procs = [
        subprocess.Popen([*cli, "simulate", "--port", str(sim_port)], env=env),
        subprocess.Popen(
            [*cli, "serve", "--port", str(gw_port), "--upstream", f"http://127.0.0.1:{sim_port}"], env=env
        ),
    ]
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{gw_port}/v1/messages",
                    json={"model": "claude-haiku-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "servers did not start"
                time.sleep(0.2)
        assert response.status_code == 200 and response.json()["type"] == "message"
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
