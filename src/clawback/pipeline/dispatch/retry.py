"""Which failed attempts are worth another, and how long to wait first.

The rules follow the official Python SDK (``anthropic-sdk-python`` ``_base_client.py``, summarised in
``ANTHROPIC_FACTS.md``) with the issue's stricter line on client errors:

* retried: connection errors and timeouts before any answer, 429 ``rate_limit_error``, 500 and every other 5xx,
  529 ``overloaded_error``;
* never retried: any other 4xx (a 400 sent again is a 400 again; a 408 or 409 is the caller's to judge), a 429
  for the organisation's spend limit (``error.details.error_code: enforced_spend_limit_reached``: waiting does
  not lift it), and anything the upstream marks ``x-should-retry: false``. ``x-should-retry: true`` cannot make a
  client error retryable here (the SDK would let it; the issue says never another 4xx);
* the delay is ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date) when within 0-60 s, never less
  (plus up to 10 % so that a crowd told the same second does not return in the same millisecond); otherwise the
  SDK's backoff, 0.5 s doubling to 8 s, less up to 25 % jitter.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = ["Verdict", "backoff_delay", "error_details", "judge_status", "server_delay"]

SPEND_LIMIT_CODE = "enforced_spend_limit_reached"


@dataclass(frozen=True, slots=True)
class Verdict:
    retry: bool
    reason: str


def error_details(body: bytes | None) -> tuple[str | None, str | None]:
    """``(error.type, error.details.error_code)`` of an error body, where present."""
    if not body:
        return None, None
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    error = data.get("error") if isinstance(data, dict) else None
    if not isinstance(error, dict):
        return None, None
    details = error.get("details")
    code = details.get("error_code") if isinstance(details, dict) else None
    kind = error.get("type")
    return (kind if isinstance(kind, str) else None), (code if isinstance(code, str) else None)


def judge_status(status: int, headers: Mapping[str, str], body: bytes | None) -> Verdict:
    """Whether an upstream error reply may be retried."""
    should = (headers.get("x-should-retry") or "").strip().lower()
    if status == 429:
        _, code = error_details(body)
        if code == SPEND_LIMIT_CODE:
            return Verdict(False, "spend_limit")
        return Verdict(should != "false", "rate_limited")
    if status >= 500:
        return Verdict(should != "false", "overloaded" if status == 529 else "server_error")
    return Verdict(False, "client_error")


def server_delay(headers: Mapping[str, str], now_wall: float | None = None) -> float | None:
    """The delay the upstream asked for, when it asked for one within 0-60 s."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = -1.0
        if 0 <= value <= 60:
            return value
    after = headers.get("retry-after")
    if not after:
        return None
    try:
        value = float(after)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(after)
        except (TypeError, ValueError):
            return None
        value = moment.timestamp() - (now_wall if now_wall is not None else time.time())
    return value if 0 <= value <= 60 else None


def backoff_delay(
    retry_number: int, *, initial: float, maximum: float, asked: float | None, rng: random.Random
) -> float:
    """Seconds before retry number ``retry_number`` (1 for the first retry)."""
    if asked is not None:
        return asked * (1.0 + 0.1 * rng.random())
    base = min(initial * 2.0 ** (retry_number - 1), maximum)
    return base * (1.0 - 0.25 * rng.random())
