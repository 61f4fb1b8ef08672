"""Budget windows: which stretch of time a budget's counter covers at an instant.

Calendar windows (day, week from Monday, month) start at local midnight in the budget's time zone, so "the
daily budget" resets when the team's day does, daylight-saving changes included. A rolling window of
``rolling_s`` is a sliding sum over sub-windows (buckets) of ``rolling_s / 60`` (at least a minute): spend
ages out a bucket at a time, never all at once, and the counters stay a fixed, small number of keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from clawback.storage.budgets import Budget

__all__ = ["Window", "window_of"]

ROLLING_BUCKETS = 60
#: Spend buckets outlive their window by this much (a late settle, a reconciliation reading the last window).
_TTL_SLACK_S = 2 * 86400


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime
    """Calendar: when the window resets. Rolling: when the oldest bucket ages out (the next relief)."""
    buckets: tuple[str, ...]
    ttl_s: int
    label: str
    rolling: bool = False

    @property
    def key(self) -> str:
        """Names this window (alert markers are once per window)."""
        return self.buckets[0]

    def elapsed_share(self, now: datetime) -> float:
        total = (self.end - self.start).total_seconds()
        return min(max((now - self.start).total_seconds() / total, 0.0), 1.0) if total > 0 else 1.0


def _local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def window_of(budget: Budget, now: datetime, default_timezone: str = "UTC") -> Window:
    if budget.window == "rolling":
        length = int(budget.rolling_s or 3600)
        size = max(60, length // ROLLING_BUCKETS)
        count = math.ceil(length / size)
        current = int(now.timestamp()) // size
        buckets = tuple(f"r{size}:{current - i}" for i in reversed(range(count)))
        start = datetime.fromtimestamp((current - count + 1) * size, UTC)
        end = datetime.fromtimestamp((current + 1) * size, UTC)
        return Window(start, end, buckets, count * size + size, f"rolling {_duration(length)} window", rolling=True)
    zone = ZoneInfo(budget.timezone or default_timezone)
    today = now.astimezone(zone).date()
    if budget.window == "day":
        first, following, label = today, today + timedelta(days=1), f"day {today.isoformat()}"
    elif budget.window == "week":
        first = today - timedelta(days=today.weekday())
        following, label = first + timedelta(days=7), f"week of {first.isoformat()}"
    else:
        first = today.replace(day=1)
        following = (first + timedelta(days=32)).replace(day=1)
        label = f"month {first:%Y-%m}"
    start, end = _local_midnight(first, zone), _local_midnight(following, zone)
    ttl = int((end - now).total_seconds()) + _TTL_SLACK_S
    return Window(start, end, (f"{budget.window[0]}{first.isoformat()}",), ttl, f"{label} ({zone.key})")


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
