"""``clawback.gather``: many Messages calls at once, results in order, one error per item instead of one for all.

Interactive (``defer=False``): every request goes out concurrently through the client. With a client wrapped by
``clawback.wrap`` the dispatch stage under it is what keeps the calls within the upstream's learned limits (its
adaptive concurrency, rate buckets, retries and fair sharing); ``concurrency`` only bounds how many calls gather
keeps started at once, so that a list of 100,000 requests is not 100,000 tasks (and it is the only bound an
unwrapped client gets).

Deferred (``defer=True``): the requests go to the Message Batches API, at 50 % of standard prices, for work that
can wait (up to 24 h): submitted in batches within the API's limits (100,000 requests or 256 MB each), polled
with backoff (``poll_initial_s`` growing by half up to ``poll_max_s``), the results fetched and matched back by
``custom_id``. An item the API reports ``errored``, ``canceled`` or ``expired`` is that item's error
(``BatchItemError``). Past ``timeout_s`` the unfinished batches are cancelled, and what finished before the
cancellation is still returned. Fetched through a wrapped client, every succeeded item is booked in the ledger at
batch prices under its own request id (``pipeline/dispatch/batches.py``).

A Rich progress bar is shown on stderr when it is a terminal (``progress=None``), or always (``True``) or never
(``False``). Sync and async: ``gather`` takes an ``Anthropic`` (threads) or an ``AsyncAnthropic`` (run to
completion on a new event loop); ``agather`` is the coroutine, for an ``AsyncAnthropic`` on the caller's loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import anthropic
import orjson
from anthropic.types import Message
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["BatchItemError", "Outcome", "agather", "gather"]

#: The Message Batches API's limits per batch.
MAX_BATCH_REQUESTS = 100_000
MAX_BATCH_BYTES = 256 * 1024 * 1024


class BatchItemError(Exception):
    """A deferred item the Batches API did not answer: ``kind`` is errored, canceled or expired."""

    def __init__(self, kind: str, error: Mapping[str, Any] | None = None) -> None:
        detail = ""
        if error:
            inner = error.get("error") if isinstance(error.get("error"), Mapping) else error
            detail = f": {inner.get('type')}: {inner.get('message')}" if isinstance(inner, Mapping) else ""
        super().__init__(f"batch item {kind}{detail}")
        self.kind = kind
        self.error = dict(error) if error else None


@dataclass(frozen=True, slots=True)
class Outcome:
    """One request's result: its ``message``, or the ``error`` that stopped it (never both)."""

    index: int
    message: Message | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _checked(requests: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    items = [dict(r) for r in requests]
    for i, item in enumerate(items):
        if item.get("stream"):
            raise ValueError(f"requests[{i}]: gather collects whole messages; drop stream=True")
    return items


class _Bar:
    """A Rich progress bar on stderr, or nothing."""

    def __init__(self, total: int, label: str, show: bool | None) -> None:
        console = Console(stderr=True)
        self._progress: Progress | None = None
        if show or (show is None and console.is_terminal):
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                TextColumn("{task.fields[errors]} errors"), console=console, transient=False,
            )  # fmt: skip
            self._progress.start()
            self._task = self._progress.add_task(label, total=total, errors=0)
        self.errors = 0

    def advance(self, outcome: Outcome, amount: int = 1) -> None:
        if not outcome.ok:
            self.errors += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=amount, errors=self.errors)

    def describe(self, label: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=label)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


# -- interactive ----------------------------------------------------------------------------------------------


def gather(
    client: anthropic.Anthropic | anthropic.AsyncAnthropic,
    requests: Iterable[Mapping[str, Any]],
    *,
    concurrency: int = 64,
    progress: bool | None = None,
    defer: bool = False,
    timeout_s: float | None = None,
    poll_initial_s: float = 1.0,
    poll_max_s: float = 60.0,
) -> list[Outcome]:
    """Run ``client.messages.create(**request)`` for every request; the outcomes in the requests' order."""
    items = _checked(requests)
    if isinstance(client, anthropic.AsyncAnthropic):
        run = agather(client, items, concurrency=concurrency, progress=progress, defer=defer, timeout_s=timeout_s,
                      poll_initial_s=poll_initial_s, poll_max_s=poll_max_s)  # fmt: skip
        return asyncio.run(run)
    if defer:
        return _deferred_sync(client, items, progress, timeout_s, poll_initial_s, poll_max_s)
    bar = _Bar(len(items), "calls", progress)
    outcomes: list[Outcome | None] = [None] * len(items)

    def one(index: int) -> None:
        try:
            outcome = Outcome(index, message=client.messages.create(**items[index]))
        except Exception as exc:  # the item's error, not the batch's
            outcome = Outcome(index, error=exc)
        outcomes[index] = outcome
        bar.advance(outcome)

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(items) or 1))) as pool:
            list(pool.map(one, range(len(items))))
    finally:
        bar.close()
    return [o for o in outcomes if o is not None]


async def agather(
    client: anthropic.AsyncAnthropic | anthropic.Anthropic,
    requests: Iterable[Mapping[str, Any]],
    *,
    concurrency: int = 256,
    progress: bool | None = None,
    defer: bool = False,
    timeout_s: float | None = None,
    poll_initial_s: float = 1.0,
    poll_max_s: float = 60.0,
) -> list[Outcome]:
    """``gather`` as a coroutine (an ``Anthropic`` client is run on threads without blocking the loop)."""
    items = _checked(requests)
    if isinstance(client, anthropic.Anthropic):
        return await asyncio.to_thread(gather, client, items, concurrency=concurrency, progress=progress,
                                       defer=defer, timeout_s=timeout_s, poll_initial_s=poll_initial_s,
                                       poll_max_s=poll_max_s)  # fmt: skip
    if defer:
        return await _deferred_async(client, items, progress, timeout_s, poll_initial_s, poll_max_s)
    bar = _Bar(len(items), "calls", progress)
    gate = asyncio.Semaphore(max(1, concurrency))

    async def one(index: int) -> Outcome:
        async with gate:
            try:
                outcome = Outcome(index, message=await client.messages.create(**items[index]))
            except Exception as exc:
                outcome = Outcome(index, error=exc)
        bar.advance(outcome)
        return outcome

    try:
        return list(await asyncio.gather(*[one(i) for i in range(len(items))]))
    finally:
        bar.close()


# -- deferred: the Message Batches API -----------------------------------------------------------------------


def _chunks(items: Sequence[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Batch requests ``{custom_id, params}`` grouped within the API's per-batch limits."""
    batches: list[list[dict[str, Any]]] = [[]]
    size = 0
    for index, params in enumerate(items):
        entry = {"custom_id": f"item-{index}", "params": params}
        entry_size = len(orjson.dumps(entry)) + 2
        if batches[-1] and (len(batches[-1]) >= MAX_BATCH_REQUESTS or size + entry_size > MAX_BATCH_BYTES):
            batches.append([])
            size = 0
        batches[-1].append(entry)
        size += entry_size
    return [b for b in batches if b]


def _outcome(index: int, result: Any) -> Outcome:
    kind = getattr(result, "type", None)
    if kind == "succeeded":
        return Outcome(index, message=result.message)
    error: Any = getattr(result, "error", None)
    body = error.to_dict() if error is not None and hasattr(error, "to_dict") else None
    return Outcome(index, error=BatchItemError(str(kind), body))


class _Poll:
    """Backoff between polls and the deadline after which unfinished batches are cancelled."""

    def __init__(self, initial: float, maximum: float, timeout_s: float | None, clock: Callable[[], float]) -> None:
        self.delay, self.maximum, self.clock = initial, maximum, clock
        self.deadline = clock() + timeout_s if timeout_s is not None else None

    def next_delay(self) -> float:
        delay = self.delay
        self.delay = min(self.maximum, self.delay * 1.5)
        return delay

    def expired(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline


def _deferred_sync(
    client: anthropic.Anthropic, items: list[dict[str, Any]], progress: bool | None, timeout_s: float | None,
    poll_initial_s: float, poll_max_s: float,
) -> list[Outcome]:  # fmt: skip
    bar = _Bar(len(items), "batch submitted", progress)
    outcomes: dict[int, Outcome] = {}
    try:
        batch_ids = [client.messages.batches.create(requests=chunk).id for chunk in _chunks(items)]  # type: ignore[arg-type]
        poll = _Poll(poll_initial_s, poll_max_s, timeout_s, time.monotonic)
        pending, cancelled = set(batch_ids), False
        while pending:
            for batch_id in sorted(pending):
                batch = client.messages.batches.retrieve(batch_id)
                if batch.processing_status == "ended":
                    pending.discard(batch_id)
                    for row in client.messages.batches.results(batch_id):
                        index = int(row.custom_id.removeprefix("item-"))
                        outcomes[index] = _outcome(index, row.result)
                        bar.advance(outcomes[index])
            if pending and poll.expired() and not cancelled:
                for batch_id in pending:
                    client.messages.batches.cancel(batch_id)
                cancelled = True
                bar.describe("batch cancelling")
            if pending:
                time.sleep(poll.next_delay())
    finally:
        bar.close()
    return [outcomes.get(i) or Outcome(i, error=BatchItemError("missing")) for i in range(len(items))]


async def _deferred_async(
    client: anthropic.AsyncAnthropic, items: list[dict[str, Any]], progress: bool | None, timeout_s: float | None,
    poll_initial_s: float, poll_max_s: float,
) -> list[Outcome]:  # fmt: skip
    bar = _Bar(len(items), "batch submitted", progress)
    outcomes: dict[int, Outcome] = {}
    try:
        batch_ids = [(await client.messages.batches.create(requests=chunk)).id for chunk in _chunks(items)]  # type: ignore[arg-type]
        poll = _Poll(poll_initial_s, poll_max_s, timeout_s, time.monotonic)
        pending, cancelled = set(batch_ids), False
        while pending:
            for batch_id in sorted(pending):
                batch = await client.messages.batches.retrieve(batch_id)
                if batch.processing_status == "ended":
                    pending.discard(batch_id)
                    async for row in await client.messages.batches.results(batch_id):
                        index = int(row.custom_id.removeprefix("item-"))
                        outcomes[index] = _outcome(index, row.result)
                        bar.advance(outcomes[index])
            if pending and poll.expired() and not cancelled:
                for batch_id in pending:
                    await client.messages.batches.cancel(batch_id)
                cancelled = True
                bar.describe("batch cancelling")
            if pending:
                await asyncio.sleep(poll.next_delay())
    finally:
        bar.close()
    return [outcomes.get(i) or Outcome(i, error=BatchItemError("missing")) for i in range(len(items))]
