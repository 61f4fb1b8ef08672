"""The flags' admin API and commands: set, list, history, rollback, audited; bad input is a 4xx, never a 500."""

from __future__ import annotations

import httpx
import pytest
import yaml
from pydantic import SecretStr
from typer.testing import CliRunner

from clawback.cli import app

TOKEN = "admin-14"


@pytest.fixture
def gateway_settings(gateway_settings):
    return gateway_settings.model_copy(
        update={
            "gateway": gateway_settings.gateway.model_copy(update={"admin_token": SecretStr(TOKEN)}),
            "exact_cache": gateway_settings.exact_cache.model_copy(update={"enabled": True}),
        }
    )


@pytest.fixture
def admin(gateway):
    with httpx.Client(base_url=gateway.url, headers={"authorization": f"Bearer {TOKEN}"}, timeout=10) as client:
        yield client


def test_admin_api_sets_lists_audits_and_rolls_back(admin, gateway, gateway_settings, tmp_path):
    assert httpx.get(f"{gateway.url}/admin/flags").status_code == 401
    view = admin.get("/admin/flags").json()
    assert view["stages"] == ["exact_cache", "pruning"] and view["flags"]["exact_cache"]["mode"] == "on"
    assert view["flags"]["exact_cache"]["stored"] is False and view["flags"]["holdout"]["mode"] == "off"

    for bad in ({"mode": "sometimes"}, {"mode": "on", "rollout": 150}, {"mode": "on", "rollout": "ten"}):
        response = admin.post("/admin/flags/exact_cache", json=bad)
        assert response.status_code == 400 and response.json()["type"] == "error", bad
    changed = admin.post("/admin/flags/exact_cache", json={"mode": "shadow", "rollout": 25, "actor": "ann",
                                                           "reason": "measure"}).json()  # fmt: skip
    assert [(c["name"], c["mode"], c["rollout"], c["previous_mode"]) for c in changed["changes"]] == [
        ("exact_cache", "shadow", 25.0, None)
    ]
    assert admin.get("/admin/flags").json()["flags"]["exact_cache"]["mode"] == "shadow"  # this replica: at once

    rolled = admin.post("/admin/rollback", json={"stage": "all", "actor": "bob"}).json()["changes"]
    assert [(c["name"], c["previous_mode"], c["mode"], c["rollout"]) for c in rolled] == [
        ("exact_cache", "shadow", "off", 25.0),
        ("pruning", None, "off", 100.0),  # on by default in shadow, never set: rolled back from its start
    ]
    history = admin.get("/admin/flags/history", params={"name": "exact_cache"}).json()["changes"]
    assert [(c["actor"], c["mode"], c["reason"]) for c in history] == [("ann", "shadow", "measure"),
                                                                       ("bob", "off", "rollback all")]  # fmt: skip

    # the commands act on the same store (the ledger's database), audited with --actor / --reason
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"ledger": {"url": gateway_settings.ledger.url}}))
    runner = CliRunner()
    result = runner.invoke(app, ["flags", "set", "exact_cache", "on", "--rollout", "10", "--actor", "cy",
                                 "--reason", "canary", "--config", str(config)])  # fmt: skip
    assert result.exit_code == 0 and "exact_cache: off 25% -> on 10%" in result.output, result.output
    assert runner.invoke(app, ["flags", "set", "exact_cache", "maybe", "--config", str(config)]).exit_code == 2
    result = runner.invoke(app, ["flags", "history", "exact_cache", "--config", str(config)])
    assert result.exit_code == 0 and "canary" in result.output and "measure" in result.output
    result = runner.invoke(app, ["flags", "list", "--config", str(config)])
    assert result.exit_code == 0 and "cy" in result.output
