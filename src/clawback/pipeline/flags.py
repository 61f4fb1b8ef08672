"""The flags stage: each request's mode per optimization (``off`` / ``shadow`` / ``on``) and its cohort, decided once.

It sits right inside the ledger (``build.py``), so everything below it runs as decided here and the ledger row
says how (labels ``cohort``, ``flag.<stage>``). The decision is taken from the replica's in-memory copy of the
flag store (``storage/flags.py``, no query on the request path) and put in ``ctx.decision``; stages read it with
``ctx.mode(self.name)``. A flag changed while a request is in flight does not touch that request.

Bucketing is deterministic: a stable hash (BLAKE2b, not Python's per-process ``hash``) of the request's
identity, salted with the flag's name, gives a bucket in [0, 100); a flag with rollout ``r`` applies its mode to
buckets below ``r`` and ``off`` to the rest. The identity is the first of ``flags.bucket_by`` the request has:
``conversation`` (Claude Code's ``x-claude-code-session-id``, else the conversation's opening message, which
stays the same for the whole conversation and across a key rotation), ``user``, ``key``. So one conversation
never flips between modes mid-way (a flipped conversation loses its prompt cache), raising a rollout from 10 to 50
keeps the first 10 % where they were, and every replica and every restart decides the same. The row's
``bucket_id`` label names the identity by a short hash, so that a report can group a conversation's requests
(they are not independent samples).

The holdout is a slice of buckets (``flags.holdout_offset`` .. ``+ size``, by the same identity, salted
``holdout``) that gets no optimization at all: the honest measure of what the optimizations save is the treated
traffic against it (``clawback.holdout``). Its size is the ``holdout`` flag's rollout once set, else
``flags.holdout_percent``.

A stage opts in to flags by declaring the modes it honours, ``modes = ("off", "shadow", "on")`` (or ``("off",
"on")``), and reading ``ctx.mode(self.name)``: ``off`` skips its work, ``shadow`` computes what it would do and
books the would-be saving in ``ctx.shadow_savings`` while changing nothing the client or the upstream sees, ``on``
does it. A stage without ``"shadow"`` in its modes gets ``off`` where its flag says ``shadow``; a stage without
``modes`` (the budget stage: a limit, not an optimization) is not flagged, held out or rolled back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import orjson

from clawback.config import FlagMode, FlagSettings
from clawback.pipeline.context import Decision, Mode, Reply, RequestContext
from clawback.pipeline.stage import CallNext, Chain
from clawback.storage.flags import FlagState, FlagStore

__all__ = ["HOLDOUT", "FlagsStage", "bucket", "identity"]

HOLDOUT = "holdout"
_SCALE = 100.0 / 2**64


def bucket(salt: str, flag: str, who: str) -> float:
    """Where ``who`` falls for ``flag``, in [0, 100): the same in every process, on every run."""
    digest = hashlib.blake2b(f"{salt}\x00{flag}\x00{who}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") * _SCALE


def _conversation(ctx: RequestContext) -> str | None:
    session = ctx.tenant.session_id
    if session:
        return "session:" + session
    messages = ctx.body.get("messages")
    if isinstance(messages, list) and messages:
        opening = hashlib.blake2b(orjson.dumps(messages[0], option=orjson.OPT_SORT_KEYS), digest_size=12)
        return "opening:" + opening.hexdigest()
    return None


def identity(ctx: RequestContext, bucket_by: Sequence[str]) -> tuple[str, str]:
    """What ``ctx`` is bucketed by: (kind, value); the request itself when it has none of ``bucket_by``."""
    for kind in bucket_by:
        if kind == "conversation":
            value = _conversation(ctx)
        elif kind == "user":
            value = ctx.tenant.user
        else:
            value = ctx.tenant.key_id
        if value:
            return kind, value
    return "request", ctx.request_id


class FlagsStage:
    """Decides ``ctx.decision`` from ``store``'s current flags (none: every stage at its configured start)."""

    name = "flags"

    def __init__(self, settings: FlagSettings, store: FlagStore | None = None) -> None:
        self.settings = settings
        self.store = store
        self.stages: tuple[tuple[str, bool], ...] = ()
        """The flagged stages below (those declaring ``modes``), by name, and whether each has shadow (``bind``)."""
        self._starts: dict[str, FlagState] = {HOLDOUT: self.initial(HOLDOUT)}
        self._below: tuple[tuple[str, bool, str, FlagState], ...] = ()
        """Per stage below: name, shadow support, its label, its configured start (computed once: the hot path)."""

    def bind(self, chain: Chain) -> None:
        self.stages = tuple(
            (stage.name, "shadow" in modes) for stage in chain.below if (modes := getattr(stage, "modes", None))
        )
        self._starts.update((name, self.initial(name)) for name, _ in self.stages)
        self._below = tuple((name, shadows, "flag." + name, self._starts[name]) for name, shadows in self.stages)

    async def aclose(self) -> None:
        if self.store is not None:
            self.store.close()

    def initial(self, name: str) -> FlagState:
        """A flag no one has set: the configured start (``flags.initial``), else ``on`` for every request."""
        if name == HOLDOUT:
            percent = self.settings.holdout_percent
            return FlagState(HOLDOUT, "on" if percent > 0 else "off", percent)
        mode: FlagMode = self.settings.initial.get(name, "on")
        return FlagState(name, mode, 100.0)

    def current(self) -> Mapping[str, FlagState]:
        return self.store.current if self.store is not None else {}

    def flag(self, name: str) -> FlagState:
        """The flag as this replica applies it now (stored, else its configured start)."""
        return self.current().get(name) or self._starts.get(name) or self.initial(name)

    def decide(self, ctx: RequestContext) -> Decision:
        flags = self.current()
        salt = self.settings.salt
        kind, who = identity(ctx, self.settings.bucket_by)
        holdout = flags.get(HOLDOUT) or self._starts[HOLDOUT]
        size = holdout.rollout if holdout.mode != "off" else 0.0
        in_holdout = False
        if size > 0:
            offset = self.settings.holdout_offset
            position = (bucket(salt, HOLDOUT, who) - offset) % 100.0
            in_holdout = position < size
        labels = ctx.tenant.labels
        modes: dict[str, Mode] = {}
        for name, shadows, label, start in self._below:
            if in_holdout:
                modes[name] = labels[label] = "off"
                continue
            state = flags.get(name) or start
            mode: Mode = state.mode
            rollout = state.rollout
            if mode != "off" and rollout < 100.0 and (rollout <= 0.0 or bucket(salt, name, who) >= rollout):
                mode = "off"  # outside the rollout (the hash only when a rollout is partial: the hot path)
            if mode == "shadow" and not shadows:
                mode = "off"
            modes[name] = labels[label] = mode
        labels["cohort"] = HOLDOUT if in_holdout else "treated"
        labels["bucket_by"] = kind
        labels["bucket_id"] = hashlib.blake2b(who.encode(), digest_size=6).hexdigest()  # a report's clusters
        return Decision(modes, in_holdout)

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply:
        if ctx.decision is None:  # a stage's own request (pruning's summary) comes decided
            ctx.decision = self.decide(ctx)
        return await call_next(ctx)
