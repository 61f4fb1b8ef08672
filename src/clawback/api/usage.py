"""The ``usage`` object, normalized.

The API reports cache writes two ways: ``cache_creation_input_tokens`` (the total) and, on newer
responses, ``cache_creation.ephemeral_5m_input_tokens`` / ``ephemeral_1h_input_tokens`` (the split by TTL,
which is billed at different rates). A stream reports usage in ``message_start`` and again, cumulatively,
in every ``message_delta``: the last value of each field wins, it is never added up. ``Usage`` hides both
quirks so that pricing and the ledger read one shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["Usage"]


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_write_5m_input_tokens: int = 0
    cache_write_1h_input_tokens: int = 0

    @property
    def cache_creation_input_tokens(self) -> int:
        return self.cache_write_5m_input_tokens + self.cache_write_1h_input_tokens

    @property
    def total_input_tokens(self) -> int:
        """Every prompt token, cached or not: what the Haiku 5.5 large-prompt tier is measured on."""
        return self.input_tokens + self.cache_read_input_tokens + self.cache_creation_input_tokens

    @classmethod
    def from_api(cls, usage: Mapping[str, Any] | None) -> Usage:
        """Read an API ``usage`` object; a missing TTL split counts every write as 5-minute."""
        if not usage:
            return cls()
        split = usage.get("cache_creation")
        if isinstance(split, Mapping):
            write_5m = _int(split.get("ephemeral_5m_input_tokens"))
            write_1h = _int(split.get("ephemeral_1h_input_tokens"))
        else:
            write_5m, write_1h = _int(usage.get("cache_creation_input_tokens")), 0
        return cls(
            input_tokens=_int(usage.get("input_tokens")),
            output_tokens=_int(usage.get("output_tokens")),
            cache_read_input_tokens=_int(usage.get("cache_read_input_tokens")),
            cache_write_5m_input_tokens=write_5m,
            cache_write_1h_input_tokens=write_1h,
        )

    def updated(self, usage: Mapping[str, Any] | None) -> Usage:
        """Apply a later, cumulative report (``message_delta``): fields it carries replace ours."""
        if not usage:
            return self
        changes: dict[str, int] = {}
        for name in ("input_tokens", "output_tokens", "cache_read_input_tokens"):
            if usage.get(name) is not None:
                changes[name] = _int(usage.get(name))
        split = usage.get("cache_creation")
        if isinstance(split, Mapping):
            changes["cache_write_5m_input_tokens"] = _int(split.get("ephemeral_5m_input_tokens"))
            changes["cache_write_1h_input_tokens"] = _int(split.get("ephemeral_1h_input_tokens"))
        elif usage.get("cache_creation_input_tokens") is not None:
            changes["cache_write_5m_input_tokens"] = _int(usage.get("cache_creation_input_tokens"))
            changes["cache_write_1h_input_tokens"] = 0
        return replace(self, **changes) if changes else self

    def to_api(self) -> dict[str, Any]:
        """The ``usage`` object as the API sends it."""
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation": {
                "ephemeral_5m_input_tokens": self.cache_write_5m_input_tokens,
                "ephemeral_1h_input_tokens": self.cache_write_1h_input_tokens,
            },
            "output_tokens": self.output_tokens,
        }

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cache_read_input_tokens + other.cache_read_input_tokens,
            self.cache_write_5m_input_tokens + other.cache_write_5m_input_tokens,
            self.cache_write_1h_input_tokens + other.cache_write_1h_input_tokens,
        )
