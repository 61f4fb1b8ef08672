"""The real clients the suite runs through the gateway, and the ``clawback simulate`` + ``clawback serve`` stack.

The clients are npm packages pinned in ``tests/clients/package.json`` / ``package-lock.json`` and installed by
``scripts/install.sh`` (``npm ci``): Claude Code (``@anthropic-ai/claude-code``) and the TypeScript SDK
(``@anthropic-ai/sdk``). When one is missing the tests fail, never skip: the message says whether the npm
registry could be reached, so a CI machine without it is told so rather than passing silently.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from clawback.serving import free_port

__all__ = ["CLIENTS", "Stack", "claude_binary", "client_version", "node_binary", "running_stack"]

CLIENTS = Path(__file__).resolve().parents[1] / "clients"


@functools.cache  # (one probe per test session: `npm ping` may take its whole timeout)
def _registry_status() -> str:
    npm = shutil.which("npm")
    if npm is None:
        return "npm is not installed"
    try:
        probe = subprocess.run([npm, "ping"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "the npm registry did not answer `npm ping` within 30 s"
    if probe.returncode != 0:
        return f"the npm registry cannot be reached (`npm ping`: {(probe.stderr or probe.stdout).strip()[-300:]})"
    return "the npm registry is reachable, so `bash scripts/install.sh` (npm ci in tests/clients) should fix it"


def _missing(what: str) -> None:
    pytest.fail(f"{what} is not installed in {CLIENTS}/node_modules: {_registry_status()}", pytrace=False)


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        _missing("node")
    return str(node)


def claude_binary() -> Path:
    path = CLIENTS / "node_modules" / ".bin" / "claude"
    if not path.exists():
        _missing("Claude Code (@anthropic-ai/claude-code)")
    return path


def client_version(package: str) -> str:
    """The installed version of an npm package of ``tests/clients`` (fails when it is missing)."""
    manifest = CLIENTS / "node_modules" / package / "package.json"
    if not manifest.exists():
        _missing(package)
    return str(json.loads(manifest.read_text())["version"])


@dataclass
class Stack:
    """``clawback simulate`` and ``clawback serve`` in front of it, as a user starts them."""

    simulator_url: str
    gateway_url: str
    ledger_url: str
    key: str
    env: dict[str, str]

    def billed(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.simulator_url}/_simulator/requests", timeout=10).json())

    def received(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.simulator_url}/_simulator/received", timeout=10).json())


def _wait(url: str, procs: list[subprocess.Popen[bytes]], deadline: float) -> None:
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise AssertionError(f"{proc.args} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(0.2)


@contextmanager
def running_stack(tmp: Path, simulator_yaml: str) -> Iterator[Stack]:
    """Start both servers (``simulator_yaml``: the simulator's configuration) and a clawback key."""
    sim_port, gw_port = free_port(), free_port()
    config = tmp / "simulator.yaml"
    config.write_text(simulator_yaml)
    ledger_url = f"sqlite:///{tmp / 'ledger.db'}"
    env = {**os.environ, "CLAWBACK_LEDGER__URL": ledger_url, "CLAWBACK_LEDGER__JOURNAL_PATH": str(tmp / "journal"),
           "CLAWBACK_LEDGER__FLUSH_INTERVAL_S": "0.05"}  # fmt: skip
    cli = [sys.executable, "-m", "clawback"]
    created = subprocess.run([*cli, "keys", "create", "real-clients"], env=env, capture_output=True, text=True)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    logs = [open(tmp / "simulator.log", "wb"), open(tmp / "gateway.log", "wb")]  # noqa: SIM115
    procs = [
        subprocess.Popen([*cli, "simulate", "--port", str(sim_port), "--config", str(config)], env=env,
                         stdout=logs[0], stderr=subprocess.STDOUT),
        subprocess.Popen([*cli, "serve", "--port", str(gw_port), "--upstream", f"http://127.0.0.1:{sim_port}"],
                         env=env, stdout=logs[1], stderr=subprocess.STDOUT),
    ]  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        _wait(f"http://127.0.0.1:{sim_port}/_simulator/totals", procs, deadline)
        _wait(f"http://127.0.0.1:{gw_port}/healthz", procs, deadline)
        yield Stack(f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{gw_port}", ledger_url, key, env)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
