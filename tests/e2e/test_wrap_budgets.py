"""A budget in the in-process wrapper (``clawback.wrap``): counters in the process, no gateway, no Redis.
The official SDK sees the refusal as its own ``RateLimitError`` and, told ``x-should-retry: false``, does not
retry it."""

from __future__ import annotations

import anthropic

import clawback
from clawback.storage.budgets import BudgetSpec, BudgetStore
from clawback.storage.migrate import migrate
from tests.e2e.scenarios import ledger_rows

MODEL = "claude-haiku-4-5"


def test_wrapped_client_is_held_to_a_budget(simulator, gateway_settings):  # type: ignore[no-untyped-def]
    migrate(gateway_settings.ledger.url)
    store = BudgetStore(gateway_settings.ledger.url)
    store.create(BudgetSpec(name="wrapped", scope="feature", scope_value="lead-chat", limit_usd="0.001",
                            window="day"), actor="test")  # fmt: skip
    store.close()
    client = clawback.wrap(anthropic.Anthropic(base_url=simulator.url, api_key="sk-ant-x", max_retries=2),
                           settings=gateway_settings, labels={"feature": "lead-chat"})  # fmt: skip
    try:
        served = 0
        for _ in range(50):
            try:
                client.messages.create(model=MODEL, max_tokens=40, messages=[{"role": "user", "content": "hi"}])
                served += 1
            except anthropic.RateLimitError as exc:
                assert "wrapped" in str(exc) and exc.response.headers["x-should-retry"] == "false"
                break
        else:
            raise AssertionError("the budget never refused")
    finally:
        client.close()
    rows = ledger_rows(gateway_settings, served + 1)
    assert len(rows) == served + 1  # one attempt for the refused call, not three
    assert sum(r.cost_micro_usd for r in rows) <= 1000 and rows[-1].budget_status == "refused"
