"""What the simulator received and billed.

Tests compare the gateway's ledger against this record: the upstream's own count is the ground truth of
what a request cost, so it is priced here by the same pricing module and exposed at
``GET /_simulator/requests`` and ``GET /_simulator/totals``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from clawback.api.usage import Usage

__all__ = ["BilledRequest", "BillingLog", "ReceivedRequest"]


@dataclass(slots=True)
class BilledRequest:
    request_id: str
    model: str
    endpoint: str
    stream: bool
    batch: bool
    status: int
    error_type: str | None
    workspace: str
    usage: Usage = field(default_factory=Usage)
    cost_micro_usd: int = 0

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["usage"] = self.usage.to_api()
        return data


@dataclass(slots=True)
class ReceivedRequest:
    """One request as it arrived on the wire, for byte-for-byte forwarding checks."""

    request_id: str
    method: str
    path: str
    query: str
    headers: list[tuple[str, str]]
    body: str


class BillingLog:
    def __init__(self, keep_raw: int = 200) -> None:
        self.billed: list[BilledRequest] = []
        self.received: deque[ReceivedRequest] = deque(maxlen=keep_raw)

    def bill(self, record: BilledRequest) -> None:
        self.billed.append(record)

    def totals(self) -> dict[str, Any]:
        usage = Usage()
        cost = 0
        for record in self.billed:
            usage = usage + record.usage
            cost += record.cost_micro_usd
        return {
            "requests": len(self.billed),
            "errors": sum(1 for r in self.billed if r.status >= 400),
            "usage": usage.to_api(),
            "cost_micro_usd": cost,
        }

    def reset(self) -> None:
        self.billed.clear()
        self.received.clear()
