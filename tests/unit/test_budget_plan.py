"""Budget windows, scopes, the worst case and definition validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from clawback.api.usage import Usage
from clawback.pipeline.budget import window_of, worst_case
from clawback.pipeline.budget.plan import scope_value_of
from clawback.pipeline.context import Tenant
from clawback.pricing import load_price_book
from clawback.storage.budgets import Budget, BudgetOverride, BudgetSpec, OverrideSpec
from clawback.tokens import count_request_tokens

T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # the night Europe/Paris moves to summer time


def budget(**fields: Any) -> Budget:
    values: dict[str, Any] = {
        "id": "bud_1", "name": "b", "scope": "team", "scope_value": "sales", "limit_micro_usd": 1_000_000,
        "limit_tokens": None, "window": "day", "rolling_s": None, "timezone": None, "thresholds": (50, 80, 100),
        "forecast": True, "action": "refuse", "downgrade_model": None, "min_max_tokens": None,
        "on_store_error": "closed", "created_at": T0, "updated_at": T0,
    }  # fmt: skip
    values.update(fields)
    return Budget(**values)


def test_calendar_windows_follow_the_time_zone() -> None:
    day = window_of(budget(timezone="Europe/Paris"), T0)
    assert day.start == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)  # local midnight, winter time (UTC+1)
    assert day.end == datetime(2026, 3, 29, 22, 0, tzinfo=UTC)  # next local midnight, summer time (UTC+2)
    assert "(Europe/Paris)" in day.label and day.buckets == ("d2026-03-29",)
    week = window_of(budget(window="week"), T0)
    assert week.start == datetime(2026, 3, 23, tzinfo=UTC) and week.end - week.start == timedelta(days=7)
    month = window_of(budget(window="month", timezone="America/New_York"), T0)
    assert month.start == datetime(2026, 3, 1, 5, 0, tzinfo=UTC) and month.label.startswith("month 2026-03")


def test_rolling_windows_slide_a_bucket_at_a_time() -> None:
    hour = budget(window="rolling", rolling_s=3600)
    now = window_of(hour, T0)
    later = window_of(hour, T0 + timedelta(minutes=1))
    assert len(now.buckets) == 60 and now.buckets[1:] == later.buckets[:-1]
    assert now.end - now.start == timedelta(hours=1) and now.rolling


def test_scopes() -> None:
    tenant = Tenant(key_id="key_1", team="sales", session_id="sess-9")
    assert scope_value_of(budget(), tenant) == "sales"
    assert scope_value_of(budget(scope_value="ops"), tenant) is None
    assert scope_value_of(budget(scope="conversation", scope_value="*"), tenant) == "sess-9"
    assert scope_value_of(budget(scope="user", scope_value="*"), tenant) is None
    assert scope_value_of(budget(scope="org", scope_value=None), tenant) == "org"


def test_override_applies_only_while_it_lasts() -> None:
    override = BudgetOverride(1, "bud_1", 5_000_000, None, False, "incident", "alice", T0, T0 + timedelta(hours=1))
    b = budget(overrides=(override,))
    assert b.limits(T0 + timedelta(minutes=59))[:2] == (5_000_000, None)
    assert b.limits(T0 + timedelta(hours=1))[:2] == (1_000_000, None)
    lifted = BudgetOverride(2, "bud_1", None, None, True, "incident", "bob", T0, T0 + timedelta(hours=1))
    assert budget(overrides=(lifted,)).limits(T0)[:2] == (None, None)


def test_definitions_are_validated_with_actionable_messages() -> None:
    with pytest.raises(ValidationError, match="limit_usd and/or limit_tokens"):
        BudgetSpec(name="x", scope="org")
    with pytest.raises(ValidationError, match="needs scope_value"):
        BudgetSpec(name="x", scope="team", limit_usd=1)
    with pytest.raises(ValidationError, match="rolling_s is given with window=rolling"):
        BudgetSpec(name="x", scope="org", limit_usd=1, window="rolling")
    with pytest.raises(ValidationError, match="downgrade_model and/or min_max_tokens"):
        BudgetSpec(name="x", scope="org", limit_usd=1, action="downgrade")
    with pytest.raises(ValidationError, match="less than or equal"):
        OverrideSpec(limit_usd=1, duration_s=10**9, reason="why not")
    assert BudgetSpec(name="x", scope="org", limit_tokens=5, thresholds=[80, 50, 80]).thresholds == [50, 80]


@settings(max_examples=200, deadline=None)
@given(
    model=st.sampled_from(["claude-sonnet-4-6", "claude-opus-4-1", "claude-haiku-4-5", "some-unknown-model"]),
    text=st.text(min_size=1, max_size=3000),
    max_tokens=st.integers(1, 64_000),
    cached=st.floats(0, 1),
    written_1h=st.booleans(),
    output_share=st.floats(0, 1),
)
def test_worst_case_covers_every_bill_of_the_estimated_prompt(
    model: str, text: str, max_tokens: int, cached: float, written_1h: bool, output_share: float
) -> None:
    """Whatever split of the prompt the API bills (uncached, cache read, 5 m or 1 h write) and however many
    output tokens up to max_tokens, the booked cost is at most the reservation."""
    book = load_price_book()
    body = {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}
    prompt = count_request_tokens(body)
    written = int(prompt * cached)
    usage = Usage(
        input_tokens=prompt - written,
        output_tokens=int(max_tokens * output_share),
        cache_write_5m_input_tokens=0 if written_1h else written,
        cache_write_1h_input_tokens=written if written_1h else 0,
    )
    reserved = worst_case(book, body, 0.0)
    assert book.cost(model, usage).micro_usd <= reserved.micro_usd
    assert usage.total_input_tokens + usage.output_tokens <= reserved.tokens


def test_alerts_fire_once_per_window_and_forecast_only_on_a_run_rate_that_crosses() -> None:
    import asyncio

    from clawback.config import BudgetSettings
    from clawback.pipeline.budget.alerts import Alerts, BudgetMetrics
    from clawback.pipeline.budget.plan import Applicable
    from clawback.storage.budget_counters import CounterUsage, EmbeddedCounters

    raised: list[tuple[str, int | None]] = []

    class Recording(Alerts):
        def _raise(self, alert: Any) -> None:
            raised.append((alert.kind, alert.threshold))

    month = budget(window="month", thresholds=(50, 80))
    now = datetime(2026, 3, 16, tzinfo=UTC)  # halfway through March
    window = window_of(month, now)
    alerts = Recording(BudgetSettings(), EmbeddedCounters(), None, BudgetMetrics())  # type: ignore[arg-type]

    async def settle(spent: int, at: datetime = now) -> None:
        await alerts.check(Applicable(month, "sales", window), CounterUsage(spent_micro_usd=spent), at)

    async def scenario() -> None:
        await settle(400_000)  # 40 % at half time: on course for 80 %, no alert
        assert raised == []
        await settle(550_000)  # 55 %: the 50 % threshold, and a run rate (110 %) that crosses the limit
        assert raised == [("threshold", 50), ("forecast", None)]
        await settle(560_000)
        await settle(810_000)
        assert raised == [("threshold", 50), ("forecast", None), ("threshold", 80)]  # each once per window

    asyncio.run(scenario())
    early = Recording(BudgetSettings(forecast_min_elapsed=0.5), EmbeddedCounters(), None, BudgetMetrics())  # type: ignore[arg-type]
    raised.clear()
    asyncio.run(early.check(Applicable(month, "sales", window), CounterUsage(spent_micro_usd=300_000),
                            datetime(2026, 3, 4, tzinfo=UTC)))  # fmt: skip
    assert raised == []  # 30 % after 3 days would be a forecast, but too early in the window to call
