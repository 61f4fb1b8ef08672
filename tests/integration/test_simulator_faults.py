"""Injectable latency and random faults, configured rather than forced per request."""

from __future__ import annotations

import time

import httpx

from clawback.serving import BackgroundServer
from clawback.upstream.simulator.app import create_simulator_app

OK = {"model": "claude-sonnet-4-6", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}


def test_time_to_first_token_is_injected(simulator_settings):
    settings = simulator_settings.model_copy(update={"ttft_ms": 150.0})
    with BackgroundServer(create_simulator_app(settings)) as server:
        started = time.monotonic()
        with httpx.stream("POST", f"{server.url}/v1/messages", json={**OK, "stream": True},
                          headers={"x-api-key": "k"}) as response:  # fmt: skip
            first = next(response.iter_raw())
            waited = time.monotonic() - started
        assert b"message_start" in first
        assert waited >= 0.15  # a lower bound: the configured delay was applied


def test_error_rates(simulator_settings):
    settings = simulator_settings.model_copy(update={"error_rate_500": 0.5})
    with BackgroundServer(create_simulator_app(settings)) as server:
        statuses = [httpx.post(f"{server.url}/v1/messages", json=OK, headers={"x-api-key": "k"}).status_code
                    for _ in range(60)]  # fmt: skip
    failures = statuses.count(500)
    assert set(statuses) == {200, 500}
    assert 15 <= failures <= 45  # seeded: about half


def test_stream_drop_rate(simulator_settings):
    settings = simulator_settings.model_copy(update={"stream_drop_rate": 1.0})
    with BackgroundServer(create_simulator_app(settings)) as server:
        text = httpx.post(f"{server.url}/v1/messages", json={**OK, "stream": True}, headers={"x-api-key": "k"}).text
    assert "event: error" in text and "message_stop" not in text
