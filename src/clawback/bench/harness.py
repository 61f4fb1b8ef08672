"""Replay a workload through the simulator, straight (the baseline) or through the gateway's pipeline.

One replay = a fresh simulator (empty prompt cache, empty billing log, clock at zero), and for an optimized
run a fresh gateway with its own SQLite ledger in front of it. Steps are sent one at a time, in timeline
order; before each step the simulator's clock is moved to the step's time (``POST /_simulator/clock``), so
prompt-cache TTLs see the workload's real gaps while nobody waits. Sequential replay keeps runs
deterministic: the same workload gives the same bill, run after run.

Honest baseline: the baseline sends each request exactly as the client wrote it, with the client's own
``cache_control`` and nothing more, to the same simulator; every request reaches it.

What reached the upstream is observed at the upstream itself: the simulator app is wrapped in a small ASGI
recorder that keeps each ``/v1/messages`` body it receives, attributed to the step being replayed (replay is
sequential, so every upstream call in between belongs to that step). Quality is scored from those bodies,
never from what the pipeline says it did:

- fact retention: a fact a turn needs is retained when its exact value string (``"$437,500"``) is in the
  text of the request that reached the upstream for that turn;
- false hits: a step answered without reaching the upstream is a cache hit; the answer's origin is found
  by its message id (or, failing that, its text) among the answers the upstream gave to earlier steps; the
  hit is false when the origin's label class differs from the step's.

Money is counted three independent ways and compared: the simulator's own billing (``/_simulator/totals``),
the gateway's ledger, and the harness (the ``usage`` of every answer that came from the upstream, priced by
the pricing module). Answers that never reached the upstream cost nothing.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clawback.api.usage import Usage
from clawback.config import Settings, SimulatorSettings
from clawback.pricing import PriceBook, load_price_book, usd
from clawback.serving import BackgroundServer
from clawback.storage.ledger import LedgerReader, LedgerRecord
from clawback.workloads.model import Step, Workload

__all__ = ["RunResult", "UpstreamRecorder", "replay", "request_text"]

BASELINE = "baseline"


class UpstreamRecorder:
    """ASGI middleware around the simulator: every ``POST /v1/messages`` body that arrived, by step."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.current: str | None = None
        self.received: list[tuple[str | None, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/messages":
            await self.app(scope, receive, send)
            return
        ref, chunks = self.current, []

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    # recorded once the body is in, before the reply is sent: recording after the app returned
                    # raced the client, which could read the reply first and count the step as a cache hit
                    self.received.append((ref, b"".join(chunks)))
            return message

        await self.app(scope, recording_receive, send)


def request_text(body: dict[str, Any]) -> str:
    """All the text a request carries to the model: system, messages (tool results too), tools."""
    parts: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key in ("text", "content", "input", "description", "thinking"):
                if key in value:
                    walk(value[key])

    walk(body.get("system"))
    walk(body.get("messages"))
    walk(body.get("tools"))
    return "\n".join(parts)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


@dataclass(slots=True)
class RunResult:
    """One replay's figures. Money in integer micro-dollars, as everywhere in clawback."""

    workload: str
    config: str
    requests: int = 0
    errors: int = 0
    upstream_requests: int = 0
    usage: Usage = field(default_factory=Usage)
    simulator_micro_usd: int = 0
    harness_micro_usd: int = 0
    ledger_micro_usd: int | None = None
    ledger_counterfactual_micro_usd: int | None = None
    savings_by_stage: dict[str, int] = field(default_factory=dict)
    shadow_savings_by_stage: dict[str, int] = field(default_factory=dict)
    """What the stages in shadow mode would have saved (the ledger's ``shadow_savings_micro_usd``)."""
    latencies_ms: list[float] = field(default_factory=list)
    facts_needed: int = 0
    facts_retained: int = 0
    cache_hits: int = 0
    false_hits: int = 0
    wall_s: float = 0.0
    first_error: str | None = None
    records: list[LedgerRecord] = field(default_factory=list)
    """The ledger's rows, kept for a run with a holdout (``bench/savings.py`` compares its cohorts)."""

    @property
    def consistent(self) -> bool:
        """The three ways of counting money agree."""
        same = self.harness_micro_usd == self.simulator_micro_usd
        return same and (self.ledger_micro_usd is None or self.ledger_micro_usd == self.simulator_micro_usd)

    @property
    def fact_retention(self) -> float | None:
        return self.facts_retained / self.facts_needed if self.facts_needed else None

    @property
    def false_hit_rate(self) -> float | None:
        return self.false_hits / self.cache_hits if self.cache_hits else None

    def to_json(self) -> dict[str, Any]:
        return {
            "cost_usd": usd(self.simulator_micro_usd),
            "requests": self.requests,
            "upstream_requests": self.upstream_requests,
            "errors": self.errors,
            "input_tokens": self.usage.input_tokens,
            "cache_write_tokens": self.usage.cache_creation_input_tokens,
            "cache_read_tokens": self.usage.cache_read_input_tokens,
            "output_tokens": self.usage.output_tokens,
            "latency_p50_ms": round(_percentile(self.latencies_ms, 0.5), 2),
            "latency_p99_ms": round(_percentile(self.latencies_ms, 0.99), 2),
            "fact_retention": None if self.fact_retention is None else round(self.fact_retention, 4),
            "facts_scored": self.facts_needed,
            "cache_hits": self.cache_hits,
            "false_hit_rate": None if self.false_hit_rate is None else round(self.false_hit_rate, 4),
            "simulator_cost_usd": usd(self.simulator_micro_usd),
            "harness_cost_usd": usd(self.harness_micro_usd),
            "ledger_cost_usd": None if self.ledger_micro_usd is None else usd(self.ledger_micro_usd),
            "ledger_savings_by_stage_usd": {k: usd(v) for k, v in sorted(self.savings_by_stage.items())},
            "ledger_shadow_savings_by_stage_usd": {k: usd(v) for k, v in sorted(self.shadow_savings_by_stage.items())},
            "consistent": self.consistent,
            "wall_s": round(self.wall_s, 2),
        }


@dataclass(slots=True)
class _Run:
    recorder: UpstreamRecorder
    simulator_url: str
    target_url: str
    key: str = "sk-clawback-bench"
    ledger_url: str | None = None


@contextlib.contextmanager
def _servers(workload: Workload, settings: Settings | None, workdir: Path, ledger_url: str | None) -> Iterator[_Run]:
    """The servers of one run, stopped afterwards (the gateway first, which flushes its ledger)."""
    from clawback.upstream.simulator.app import create_simulator_app

    recorder = UpstreamRecorder(create_simulator_app(SimulatorSettings(seed=0, output_tokens=workload.output_tokens)))
    with BackgroundServer(recorder) as simulator:
        if settings is None:
            yield _Run(recorder, simulator.url, simulator.url)
            return
        from clawback.gateway.app import create_gateway_app
        from clawback.storage.keys import KeyStore

        url = ledger_url or f"sqlite:///{workdir / 'ledger.db'}"
        settings = settings.model_copy(
            update={
                "upstream": settings.upstream.model_copy(update={"url": simulator.url}),
                "ledger": settings.ledger.model_copy(
                    update={"url": url, "journal_path": str(workdir / "ledger.journal"), "flush_interval_s": 0.05}
                ),
            }
        )
        app = create_gateway_app(settings)
        gateway = BackgroundServer(app).start()
        try:
            _, secret = KeyStore(url).create(f"bench-{workload.name}", {"feature": workload.name})
            yield _Run(recorder, simulator.url, gateway.url, secret, url)
        finally:
            gateway.stop()  # the lifespan shutdown flushes the ledger


def replay(
    workload: Workload,
    *,
    config: str = BASELINE,
    settings: Settings | None = None,
    price_book: PriceBook | None = None,
    ledger_url: str | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> RunResult:
    """Replay ``workload``: to the simulator directly when ``settings`` is None, else through a gateway
    built from ``settings`` (its upstream and ledger are set here). ``ledger_url`` keeps the ledger
    somewhere lasting (the demo); by default it lives in a temporary directory."""
    price_book = price_book or load_price_book()
    result = RunResult(workload.name, config)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="clawback-bench-") as tmp:
        with _servers(workload, settings, Path(tmp), ledger_url) as run:
            _send_all(workload, run, price_book, result, on_step)
            with httpx.Client(base_url=run.simulator_url) as admin:
                totals = admin.get("/_simulator/totals").json()
        # The gateway has stopped here, so its ledger is complete.
        if run.ledger_url is not None:
            with LedgerReader(run.ledger_url) as reader:
                ledger_totals = reader.totals()
                result.ledger_micro_usd = ledger_totals["cost_micro_usd"]
                result.ledger_counterfactual_micro_usd = ledger_totals["counterfactual_micro_usd"]
                result.savings_by_stage = reader.savings_by_stage()
                result.shadow_savings_by_stage = reader.savings_by_stage(shadow=True)
                if settings is not None and settings.flags.holdout_percent > 0:
                    result.records = reader.rows()
    result.simulator_micro_usd = int(totals["cost_micro_usd"])
    result.upstream_requests = int(totals["requests"])
    result.usage = Usage.from_api(totals["usage"])
    result.wall_s = time.perf_counter() - started
    return result


def _send_all(
    workload: Workload,
    run: _Run,
    price_book: PriceBook,
    result: RunResult,
    on_step: Callable[[Step], None] | None,
) -> None:
    recorder = run.recorder
    headers = {"x-api-key": run.key, "anthropic-version": "2023-06-01", "content-type": "application/json"}
    origin_by_id: dict[str, str] = {}  # message id -> label class of the step the upstream answered
    origin_by_text: dict[str, str] = {}
    clock = workload.steps[0].at_s if workload.steps else 0.0
    timeout = httpx.Timeout(300.0, connect=10.0)
    with (
        httpx.Client(base_url=run.target_url, headers=headers, timeout=timeout) as client,
        httpx.Client(base_url=run.simulator_url, timeout=timeout) as admin,
    ):
        for step in workload:
            if step.at_s > clock:
                admin.post("/_simulator/clock", json={"advance_s": step.at_s - clock})
                clock = step.at_s
            label = step.labels.same_as or step.ref
            recorder.current = step.ref
            before = len(recorder.received)
            sent = time.perf_counter()
            response = client.post("/v1/messages", content=orjson.dumps(step.request))
            result.latencies_ms.append((time.perf_counter() - sent) * 1000)
            result.requests += 1
            upstream = recorder.received[before:]
            reply = _json(response)
            if response.status_code != 200 or not isinstance(reply, dict):
                result.errors += 1
                result.first_error = result.first_error or f"{step.ref}: {response.status_code} {response.text[:300]}"
            elif upstream:
                usage = Usage.from_api(reply.get("usage"))
                result.harness_micro_usd += price_book.cost(str(step.request["model"]), usage).micro_usd
                origin_by_id.setdefault(str(reply.get("id")), label)
                origin_by_text.setdefault(_reply_text(reply), label)
            else:
                result.cache_hits += 1
                origin = origin_by_id.get(str(reply.get("id"))) or origin_by_text.get(_reply_text(reply))
                if origin != label:  # an answer we cannot trace back counts as false
                    result.false_hits += 1
            if step.labels.needed_facts and upstream:
                text = request_text(orjson.loads(upstream[-1][1]))
                result.facts_needed += len(step.labels.needed_facts)
                result.facts_retained += sum(value in text for value in step.labels.needed_facts.values())
            if on_step is not None:
                on_step(step)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _reply_text(reply: dict[str, Any]) -> str:
    blocks = reply.get("content") or []
    return "\n".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))
