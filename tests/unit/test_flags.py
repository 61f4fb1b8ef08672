"""Flags: deterministic bucketing (across processes and restarts, at the configured percentage), the decision a
request carries, the audited store."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clawback.config import FlagSettings
from clawback.pipeline.context import Reply, RequestContext, Tenant
from clawback.pipeline.flags import HOLDOUT, FlagsStage, bucket, identity
from clawback.pipeline.stage import Pipeline
from clawback.storage.flags import FlagStore, FlagUpdate
from clawback.storage.migrate import migrate

IDS = [f"conversation-{i}" for i in range(300)]
PRINT_BUCKETS = (
    f"from clawback.pipeline.flags import bucket\nprint('\\n'.join(repr(bucket('', 'pruning', w)) for w in {IDS!r}))"
)


def test_buckets_are_the_same_in_other_processes_whatever_their_hash_seed():
    here = [repr(bucket("", "pruning", w)) for w in IDS]
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", PRINT_BUCKETS], env=env, capture_output=True, text=True, check=True)
        assert out.stdout.split() == here


@pytest.mark.parametrize("percent", [1.0, 10.0, 50.0])
def test_rollout_share_is_the_configured_percentage_within_binomial_bounds(percent):
    n = 20_000
    inside = sum(bucket("", "pruning", f"c{i}") < percent for i in range(n))
    p = percent / 100
    sigma = math.sqrt(n * p * (1 - p))
    assert abs(inside - n * p) < 4.5 * sigma, (inside, n * p, sigma)  # fails by chance about once in 150,000


def test_salting_by_flag_name_makes_rollouts_independent_and_raising_a_rollout_keeps_the_first_slice():
    n = 20_000
    pruning = {i for i in range(n) if bucket("", "pruning", f"c{i}") < 50}
    planner = {i for i in range(n) if bucket("", "prompt_cache", f"c{i}") < 50}
    both = len(pruning & planner)
    assert abs(both - n / 4) < 4.5 * math.sqrt(n * 0.25 * 0.75)  # independent: a quarter in both
    ten = {i for i in range(n) if bucket("", "pruning", f"c{i}") < 10}
    assert ten <= pruning  # 10 % -> 50 %: nobody who had it loses it


class Named:
    def __init__(self, name: str, shadow: bool) -> None:
        self.name = name
        self.modes = ("off", "shadow", "on") if shadow else ("off", "on")
        self.seen: list[RequestContext] = []

    async def handle(self, ctx: RequestContext, call_next: Any) -> Reply:
        self.seen.append(ctx)
        return await call_next(ctx)

    def bind(self, chain: Any) -> None:
        pass

    async def aclose(self) -> None:
        pass


async def _terminal(ctx: RequestContext) -> Reply:
    return Reply(status=200, headers=[], body=b"{}")


def ctx_for(opening: str, turns: int = 1, **tenant: Any) -> RequestContext:
    messages: list[dict[str, Any]] = [{"role": "user", "content": opening}]
    for i in range(turns - 1):
        messages += [{"role": "assistant", "content": f"a{i}"}, {"role": "user", "content": f"u{i}"}]
    body = {"model": "claude-haiku-4-5", "max_tokens": 10, "messages": messages}
    return RequestContext("r", "messages", body, None, tenant=Tenant(key_id="key_1", **tenant))


def decide(stage: FlagsStage, ctx: RequestContext) -> RequestContext:
    asyncio.run(stage.handle(ctx, _terminal))
    return ctx


def key(ctx: RequestContext) -> tuple[bool, tuple[tuple[str, str], ...]]:
    assert ctx.decision is not None
    return ctx.decision.holdout, tuple(sorted(ctx.decision.modes.items()))


def flags_pipeline(settings: FlagSettings, store: FlagStore | None = None) -> FlagsStage:
    stage = FlagsStage(settings, store)
    Pipeline([stage, Named("exact_cache", True), Named("semantic_cache", False)], _terminal)
    return stage


def test_a_conversation_keeps_its_decision_as_it_grows_and_the_session_header_wins():
    stage = flags_pipeline(FlagSettings(holdout_percent=50))
    decisions = {}
    for c in range(40):
        seen = {key(decide(stage, ctx_for(f"hello {c}", turns))) for turns in (1, 3, 9)}
        assert len(seen) == 1  # the opening turn names the conversation however long it grows
        decisions[c] = seen.pop()
    assert {holdout for holdout, _ in decisions.values()} == {True, False}  # 40 conversations: both cohorts occur
    sessions = {key(decide(stage, ctx_for(f"other {c}", session_id="sess-1"))) for c in range(10)}
    assert len(sessions) == 1  # Claude Code's session id names the conversation, whatever its opening


def test_holdout_turns_every_stage_off_and_shadow_needs_support():
    stage = flags_pipeline(FlagSettings(initial={"exact_cache": "shadow", "semantic_cache": "shadow"}))
    ctx = decide(stage, ctx_for("x"))
    assert ctx.mode("exact_cache") == "shadow" and ctx.mode("semantic_cache") == "off"  # no shadow in its modes
    assert ctx.tenant.labels["cohort"] == "treated" and ctx.tenant.labels["flag.exact_cache"] == "shadow"
    everyone = flags_pipeline(FlagSettings(holdout_percent=100))
    ctx = decide(everyone, ctx_for("x"))
    assert ctx.decision is not None and ctx.decision.holdout
    assert ctx.mode("exact_cache") == "off" and ctx.tenant.labels["cohort"] == HOLDOUT


def test_holdout_offset_takes_the_complementary_slice():
    first = flags_pipeline(FlagSettings(holdout_percent=50))
    second = flags_pipeline(FlagSettings(holdout_percent=50, holdout_offset=50))
    for c in range(200):
        a, b = decide(first, ctx_for(f"c{c}")).decision, decide(second, ctx_for(f"c{c}")).decision
        assert a is not None and b is not None and a.holdout != b.holdout


def test_identity_falls_back_from_conversation_to_user_to_key():
    empty = RequestContext("req_9", "count_tokens", {}, None, tenant=Tenant(key_id="key_1", user="ann"))
    assert identity(empty, ["conversation", "user", "key"]) == ("user", "ann")
    assert identity(empty, ["conversation", "key"]) == ("key", "key_1")
    assert identity(RequestContext("req_9", "count_tokens", {}, None), ["key"]) == ("request", "req_9")


def test_store_audits_changes_and_decisions_survive_a_restart(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'flags.db'}"
    migrate(url)
    store = FlagStore(url)
    changes = store.apply([FlagUpdate("exact_cache", "on", 30)], actor="ann", reason="canary")
    assert [c.describe() for c in changes] == ["exact_cache: unset -> on 30%"]
    assert store.apply([FlagUpdate("exact_cache", "on", 30)], actor="ann") == []  # no change, no audit row
    stage = flags_pipeline(FlagSettings(), store)
    before = [decide(stage, ctx_for(f"c{c}")).mode("exact_cache") for c in range(500)]
    assert 100 < before.count("on") < 200  # 30 % of 500, well inside the bounds
    store.close()

    restarted = FlagStore(url)  # a new process: the same flags from the database, the same buckets
    restarted.reload()
    again = flags_pipeline(FlagSettings(), restarted)
    assert [decide(again, ctx_for(f"c{c}")).mode("exact_cache") for c in range(500)] == before
    rolled = restarted.rollback(["exact_cache", "semantic_cache"], actor="bob", reason="incident")
    assert [c.describe() for c in rolled] == ["exact_cache: on 30% -> off 30%", "semantic_cache: unset -> off 100%"]
    history = restarted.history()
    assert [(c.name, c.mode, c.actor, c.reason) for c in history] == [
        ("exact_cache", "on", "ann", "canary"),
        ("exact_cache", "off", "bob", "incident"),
        ("semantic_cache", "off", "bob", "incident"),
    ]
    assert all(decide(again, ctx_for(f"c{c}")).mode("exact_cache") == "off" for c in range(50))
    with pytest.raises(ValueError, match="rollout"):
        restarted.apply([FlagUpdate("pruning", "on", 150)], actor="x")
    restarted.close()


def test_a_store_on_the_process_pool_leaves_that_pool_open_when_it_closes(tmp_path: Path):
    """The gateway lends its ledger engine, whose connections ``ledger.pool_size`` counts; the store must not
    open a pool of its own beside it nor dispose the lent one."""
    from clawback.config import Settings
    from clawback.front.assembly import assemble
    from clawback.storage.engine import make_engine

    url = f"sqlite:///{tmp_path / 'flags.db'}"
    migrate(url)
    engine = make_engine(url)
    lent = FlagStore(engine)
    lent.reload()
    lent.close()
    assert engine.pool.checkedin() == 1  # its connection is still pooled: not disposed
    own = FlagStore(url)
    own.reload()
    own.close()
    assert own.engine.pool.checkedin() == 0  # a store's own engine is disposed with it

    async def terminal(ctx: RequestContext) -> Reply:
        raise AssertionError("not called")

    settings = Settings(ledger={"url": url, "journal_path": str(tmp_path / "journal")})
    assembly = assemble(settings, terminal=terminal, engine=engine)
    flags = assembly.pipeline.find(FlagsStage)
    assert flags is not None and flags.store is not None and flags.store.engine is engine
    asyncio.run(assembly.pipeline.aclose())
    assembly.ledger.close()
    engine.dispose()
