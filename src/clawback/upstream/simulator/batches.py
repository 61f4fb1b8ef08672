"""The Message Batches API, simulated.

A batch stays ``in_progress`` for ``batch_processing_s`` and is then processed in one go through the same
``SimulatedAPI`` as direct calls, billed at the batch price (50 % off). Cancelling before that point cancels
every request. ``custom_id`` is checked when the batch is created; each request's ``params`` is checked when
it is processed, and a bad one becomes an ``errored`` result, as the real API does.
Source: https://docs.anthropic.com/en/docs/build-with-claude/batch-processing
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from clawback.api.errors import ApiError, InvalidRequestError, NotFoundError
from clawback.upstream.simulator.engine import SimulatedAPI

__all__ = ["BatchStore"]

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment else None


@dataclass(slots=True)
class Batch:
    id: str
    workspace: str
    requests: list[dict[str, Any]]
    created_at: datetime
    ready_at: float
    cancel_initiated_at: datetime | None = None
    ended_at: datetime | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ended(self) -> bool:
        return self.ended_at is not None


class BatchStore:
    def __init__(self, api: SimulatedAPI, clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.clock = clock
        self._batches: dict[str, Batch] = {}

    def create(self, body: Any, workspace: str) -> dict[str, Any]:
        requests = body.get("requests") if isinstance(body, dict) else None
        if not isinstance(requests, list) or not requests:
            raise InvalidRequestError("requests: a non-empty list of {custom_id, params} is required")
        if len(requests) > MAX_REQUESTS:
            raise InvalidRequestError(f"requests: at most {MAX_REQUESTS} requests per batch")
        seen: set[str] = set()
        for i, item in enumerate(requests):
            custom_id = item.get("custom_id") if isinstance(item, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
                raise InvalidRequestError(f"requests.{i}.custom_id: must match ^[a-zA-Z0-9_-]{{1,64}}$")
            if custom_id in seen:
                raise InvalidRequestError(f"requests.{i}.custom_id: duplicate custom_id {custom_id!r}")
            if not isinstance(item.get("params"), dict):
                raise InvalidRequestError(f"requests.{i}.params: Field required")
            seen.add(custom_id)
        batch = Batch(
            id=self.api.new_id("msgbatch_"),
            workspace=workspace,
            requests=requests,
            created_at=datetime.now(UTC),
            ready_at=self.clock() + self.api.settings.batch_processing_s,
        )
        self._batches[batch.id] = batch
        return self._view(batch, "")

    def _get(self, batch_id: str, workspace: str) -> Batch:
        batch = self._batches.get(batch_id)
        if batch is None or batch.workspace != workspace:
            raise NotFoundError(f"message batch {batch_id} not found")
        self._advance(batch)
        return batch

    def _advance(self, batch: Batch) -> None:
        if batch.ended:
            return
        if batch.cancel_initiated_at is not None:
            batch.results = [{"custom_id": r["custom_id"], "result": {"type": "canceled"}} for r in batch.requests]
            batch.ended_at = datetime.now(UTC)
        elif self.clock() >= batch.ready_at:
            batch.results = [self._process(r, batch.workspace) for r in batch.requests]
            batch.ended_at = datetime.now(UTC)

    def _process(self, item: dict[str, Any], workspace: str) -> dict[str, Any]:
        try:
            turn = self.api.prepare(item["params"], workspace=workspace, batch=True)
        except ApiError as exc:
            return {"custom_id": item["custom_id"], "result": {"type": "errored", "error": exc.body(None)}}
        self.api.begin(turn)
        self.api.finish(turn, turn.reply.output_tokens)
        return {"custom_id": item["custom_id"], "result": {"type": "succeeded", "message": turn.message()}}

    def retrieve(self, batch_id: str, workspace: str, base_url: str) -> dict[str, Any]:
        return self._view(self._get(batch_id, workspace), base_url)

    def list_batches(
        self, workspace: str, base_url: str, limit: int = 20, after_id: str | None = None, before_id: str | None = None
    ) -> dict[str, Any]:
        batches = [b for b in reversed(self._batches.values()) if b.workspace == workspace]
        ids = [b.id for b in batches]
        if after_id in ids:
            batches = batches[ids.index(after_id) + 1 :]
        elif before_id in ids:
            batches = batches[: ids.index(before_id)][-limit:]
        page = batches[: max(1, min(limit, 1000))]
        for batch in page:
            self._advance(batch)
        data = [self._view(b, base_url) for b in page]
        return {
            "data": data,
            "has_more": len(batches) > len(page),
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }

    def cancel(self, batch_id: str, workspace: str, base_url: str) -> dict[str, Any]:
        batch = self._get(batch_id, workspace)
        if not batch.ended and batch.cancel_initiated_at is None:
            batch.cancel_initiated_at = datetime.now(UTC)
        view = self._view(batch, base_url)
        self._advance(batch)
        return view

    def delete(self, batch_id: str, workspace: str) -> dict[str, Any]:
        batch = self._get(batch_id, workspace)
        if not batch.ended:
            raise InvalidRequestError(f"message batch {batch_id} is still processing; cancel it before deleting it")
        del self._batches[batch_id]
        return {"id": batch_id, "type": "message_batch_deleted"}

    def results(self, batch_id: str, workspace: str) -> list[dict[str, Any]]:
        batch = self._get(batch_id, workspace)
        if not batch.ended:
            raise InvalidRequestError(f"message batch {batch_id} has not ended; results are not available yet")
        return batch.results

    def _view(self, batch: Batch, base_url: str) -> dict[str, Any]:
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if batch.ended:
            for result in batch.results:
                counts[result["result"]["type"]] += 1
            status = "ended"
        else:
            counts["processing"] = len(batch.requests)
            status = "canceling" if batch.cancel_initiated_at else "in_progress"
        return {
            "id": batch.id,
            "type": "message_batch",
            "processing_status": status,
            "request_counts": counts,
            "ended_at": _iso(batch.ended_at),
            "created_at": _iso(batch.created_at),
            "expires_at": _iso(batch.created_at + timedelta(hours=24)),
            "archived_at": None,
            "cancel_initiated_at": _iso(batch.cancel_initiated_at),
            "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if batch.ended else None,
        }
