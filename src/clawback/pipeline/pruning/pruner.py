"""The pruner: a pure, deterministic function from a request's history to a shorter, valid history.

Shape of a pruned conversation (turns are kept or dropped whole, see ``conversation``)::

    system (untouched) | opening turns | memory + turns kept for relevance | verbatim tail (incl. current turn)

The compaction point is a function of the history alone: ``schedule`` replays the conversation's growth turn by
turn and a turn's tool loop gets its own step-level schedule (``_replay_loop``), each decision looking only at
what came before it, so the pruned prefix is byte-identical from one compaction point to the next. A compaction
happens only once it pays at the model's own cache rates (reading the long prefix against writing the shorter
one). The result keeps every tool_use / tool_result pair and thinking block valid, rewrites only the
``content`` of elided ``tool_result`` blocks, adds no ``cache_control`` and passes unknown blocks through; a
turn holding a ``role: "system"`` message is pinned (never dropped, never rewritten).

Why deterministic: the gateway sees the whole history again on every turn, and a prefix that moved between two
turns would be a cache write each time. The schedule, tool loops, the payback test and the validity rules in
detail: ``docs/pruning.md``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from clawback.api.errors import InvalidRequestError
from clawback.api.messages import MAX_CACHE_BREAKPOINTS, check_tool_pairing, content_blocks
from clawback.config import PruningPolicy
from clawback.pipeline.pruning.conversation import Turn, block_text, fast_block_tokens, message_text, split_turns
from clawback.pipeline.pruning.facts import (
    corrected_values,
    extract_facts,
    facts_of_turn,
    failure_lines,
    render_memory,
)
from clawback.pipeline.pruning.relevance import Bm25Scorer, Scorer, select_relevant
from clawback.tokens import MESSAGE_OVERHEAD, fast_tokens, tokenizer_factor

__all__ = ["CacheRates", "Plan", "dropped_turns_valid", "extractive_memory", "plan_pruning", "region_digest", "render"]

_MEMORY_HEADER_TOKENS = 40
_PREVIEW_CHARS = 120
_PLACEHOLDER_TOKENS = 60  # the elision placeholder with its preview, as the loop schedule estimates it
_LOOP_MIN_MESSAGES = 5  # a human message and two steps: the fewest a tool loop can elide anything in


@dataclass(frozen=True, slots=True)
class CacheRates:
    """USD per million tokens of the model the request goes to: what a compaction trades."""

    input: float
    write: float
    read: float


@dataclass(frozen=True, slots=True)
class Plan:
    """What to keep. Turns ``[0, opening)`` are the opening, ``[opening, boundary)`` the compacted region
    (``kept`` survive for relevance, ``dropped`` go into the memory), ``[boundary, n)`` the verbatim tail, whose
    tool loops may have older outputs elided (``loop_elided``). With no history compaction yet (only tool-loop
    elision) ``opening`` and ``boundary`` are 0: every turn is in the tail."""

    turns: tuple[Turn, ...]
    opening: int
    boundary: int
    kept: tuple[int, ...]
    dropped: tuple[int, ...]
    query_turn: int
    new_compaction: bool
    compactions: int
    elide: bool
    elide_min_tokens: int
    factor: float
    facts: Mapping[int, Sequence[tuple[str, str]]] = field(default_factory=dict, compare=False, repr=False)
    loop_elided: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    """Turn index -> the message indexes (in the request) of tool_result messages elided in its tool loop."""
    loop_steps: int = 0
    """Steps of the turn in progress whose tool outputs are elided."""
    loop_new: bool = False
    """This request reaches a new compaction point of the turn in progress's tool loop."""
    loop_last_step_tokens: int = 0
    """Tokens of the newest step of the turn in progress (the one the model answers; new in the cache anyway)."""
    loop_frontier: int | None = None
    """Message index (in the request) of the last message of the turn in progress that keeps its form until
    the next compaction point: where the planner's ``frontier`` breakpoint goes (see ``_replay_loop``)."""
    loop_reused_tokens: int = 0
    """With a cached frontier: tokens up to the frontier in force before this request's compaction (a new
    compaction point rewrites the cache only after them)."""

    @property
    def tokens_before(self) -> int:
        return sum(t.tokens for t in self.turns)

    def output_index(self, index: int) -> int:
        """Where message ``index`` of the verbatim tail sits in the pruned request (``render``'s layout)."""
        spans = (*range(self.opening), *self.kept)
        head: int = sum(self.turns[i].end - self.turns[i].start for i in spans)
        return head + index - self.turns[self.boundary].start


def _turn_messages(messages: Sequence[Any], turn: Turn) -> list[Mapping[str, Any]]:
    return [m for m in messages[turn.start : turn.end] if isinstance(m, dict)]


def _pinned(messages: Sequence[Any], turn: Turn) -> bool:
    """A turn holding a message that is neither ``user`` nor ``assistant`` (a mid-conversation ``role: "system"``
    instruction) is never dropped: the instruction holds from its place in the conversation onward, so it stays
    verbatim where the client put it (right after its user message), and the turn around it with it."""
    for message in messages[turn.start : turn.end]:
        if isinstance(message, dict) and message.get("role") not in ("user", "assistant"):
            return True
    return False


class _Estimates:
    """Per-turn figures the schedule needs, computed at most once per call."""

    def __init__(
        self,
        messages: Sequence[Any],
        turns: Sequence[Turn],
        policy: PruningPolicy,
        factor: float,
        message_texts: Sequence[tuple[Any, str] | None] | None = None,
    ) -> None:
        self.messages = messages
        self.message_texts = message_texts  # ``split_turns``' ``texts``, when the caller collected them
        self.turns = turns
        self.policy = policy
        self.factor = factor
        self._compacted: dict[int, int] = {}
        self._cum: list[int] = [0]
        self.facts: dict[int, list[tuple[str, str]]] = {}
        self._texts: dict[int, list[tuple[Any, str]]] = {}

    def texts(self, index: int) -> list[tuple[Any, str]]:
        """``(role, message_text)`` of turn ``index``'s messages (read once: facts and relevance both need it)."""
        found = self._texts.get(index)
        if found is None:
            turn = self.turns[index]
            if self.message_texts is not None:
                found = [t for t in self.message_texts[turn.start : turn.end] if t is not None]
            else:
                found = [
                    (m.get("role"), message_text(m))
                    for m in self.messages[turn.start : turn.end]
                    if isinstance(m, dict)
                ]
            self._texts[index] = found
        return found

    def turn_facts(self, index: int) -> list[tuple[str, str]]:
        """The facts of turn ``index`` (extracted once per call: the schedule and the memory both need them)."""
        found = self.facts.get(index)
        if found is None:
            turn = self.turns[index]
            found = self.facts[index] = facts_of_turn(
                self.messages[turn.start : turn.end], self.texts(index), self.next_user(index)
            )
        return found

    def next_user(self, index: int) -> str | None:
        """The text of the human message that opens turn ``index + 1`` (``None`` for the last turn)."""
        if index + 1 >= len(self.turns):
            return None
        texts = self.texts(index + 1)
        return texts[0][1] if texts and texts[0][0] == "user" else None

    def elided(self, index: int) -> int:
        """Tokens turn ``index`` costs sent whole with its large tool outputs elided (a turn kept for relevance)."""
        turn = self.turns[index]
        min_tokens = self.policy.tool_elision_min_tokens
        return sum(_elided_tokens(m, min_tokens, self.factor) for m in _turn_messages(self.messages, turn))

    def compacted(self, index: int) -> int:
        """Tokens turn ``index`` still costs once compacted (its facts, or its elided self)."""
        cached = self._compacted.get(index)
        if cached is not None:
            return cached
        turn = self.turns[index]
        if not self.policy.window:
            value = sum(
                _elided_tokens(m, self.policy.tool_elision_min_tokens, self.factor) if self.policy.tool_elision
                else turn.tokens // max(1, turn.end - turn.start)
                for m in _turn_messages(self.messages, turn)
            )  # fmt: skip
        elif self.policy.fact_memory == "off":
            value = 0
        else:
            value = sum(fast_tokens(len(text), self.factor) + 6 for _, text in self.turn_facts(index))
        self._compacted[index] = value
        return value

    def region(self, start: int, end: int) -> int:
        """Tokens of turns ``[start, end)`` once compacted (prefix sums: the replay asks for growing spans)."""
        if end <= start:
            return 0
        while len(self._cum) <= end:
            self._cum.append(self._cum[-1] + self.compacted(len(self._cum) - 1))
        return self._cum[end] - self._cum[start] + _MEMORY_HEADER_TOKENS


def _elided_tokens(message: Mapping[str, Any], min_tokens: int, factor: float) -> int:
    content = message.get("content")
    if not isinstance(content, list):
        return fast_tokens(len(str(content)), factor) + 1
    total = 0
    for block in content:
        if not isinstance(block, dict):
            continue
        tokens = fast_block_tokens(block, factor)
        total += 40 if block.get("type") == "tool_result" and tokens >= min_tokens else tokens
    return total


def _pays(rates: CacheRates, turns: int, long_tokens: int, short_tokens: int, tail_tokens: int) -> bool:
    """Over the ``turns`` expected to follow: read the long prefix each turn, or write the short one once and
    read it after."""
    keep = turns * (long_tokens + tail_tokens) * rates.read
    compact = (short_tokens + tail_tokens) * (rates.write + (turns - 1) * rates.read)
    return compact < keep


@dataclass(frozen=True, slots=True)
class _Point:
    boundary: int
    query_turn: int
    step: int
    count: int
    kept: tuple[int, ...] = ()  # older turns relevance keeps verbatim


def _opening(turns: Sequence[Turn], policy: PruningPolicy) -> int:
    """The opening turns; at least one when the conversation does not begin with a human turn (an assistant
    opener has no user message to carry the memory)."""
    return min(max(policy.keep_first_turns, 1 if turns and turns[0].opener else 0), len(turns))


def schedule(
    turns: Sequence[Turn],
    policy: PruningPolicy,
    estimates: _Estimates,
    rates: CacheRates | None,
    loops: _ToolLoops | None = None,
) -> _Point | None:
    """Replay the conversation's growth and return the compaction point in force at its last turn.

    ``rates`` set: decisions are priced as cached (compaction must pay back its cache write); ``None``: every
    compaction that removes tokens pays. ``loops``: each turn's tool loop is elided (``_ToolLoops``) once the
    replay has reached the end of that turn, and the schedule counts the turn at its size after it.
    """
    n = len(turns)
    opening = _opening(turns, policy)
    cum = [0]  # turns' tokens (after their tool-loop elision), prefix sums
    settle = loops.saved if loops is not None and loops.any else None
    if settle is None:  # no tool loop to elide: every turn counts as sent
        for turn in turns:
            cum.append(cum[-1] + turn.tokens)
    boundary = opening
    point: _Point | None = None
    for step in range(opening + 1, n + 1):
        completed = step - 1  # turns 0..step-2 are complete; turn step-1 is in progress
        while settle is not None and len(cum) <= completed:  # the compaction in force while it ran: boundary
            index = len(cum) - 1
            cum.append(cum[-1] + turns[index].tokens - settle(index, boundary, cum))
        tail_turns = completed - boundary
        if tail_turns <= policy.keep_recent_turns:
            continue
        tail = cum[completed] - cum[boundary]
        over = tail > policy.trigger_tokens or (policy.trigger_turns is not None and tail_turns > policy.trigger_turns)
        if not over:
            continue
        limit = completed - policy.keep_recent_turns
        candidate = boundary
        while candidate < limit and cum[completed] - cum[candidate] > policy.target_tokens:
            candidate += 1
        if candidate == boundary:
            continue
        if rates is not None:
            long_tokens = estimates.region(opening, boundary) + cum[candidate] - cum[boundary]
            short_tokens = estimates.region(opening, candidate)
            tail_tokens = cum[completed] - cum[candidate]
            if not _pays(rates, policy.expected_turns, long_tokens, short_tokens, tail_tokens):
                continue
        boundary = candidate
        point = _Point(boundary, completed, step, (point.count if point else 0) + 1)
    while settle is not None and len(cum) <= n:
        index = len(cum) - 1
        cum.append(cum[-1] + turns[index].tokens - settle(index, boundary, cum))
    return point


@dataclass(slots=True)
class _Loop:
    """The tool loop of one turn, step by step (a step ends at a user message holding tool_result blocks)."""

    head: int  # tokens of the turn's first message (the human one)
    positions: list[int]  # message index of each step's tool_result message
    tokens: list[int]  # tokens of each step's messages
    saving: list[int]  # what eliding the step's large tool outputs saves (estimate)
    results: list[int]  # tool_result blocks in the step
    tools: list[tuple[str, ...]]  # the tools the step called


def _elidable(block: Mapping[str, Any], tokens: int, min_tokens: int) -> bool:
    """A tool_result elision may rewrite: large enough, and no breakpoint inside its content (a client's
    breakpoint must survive, and moving it onto the block could exceed the API's four)."""
    if block.get("type") != "tool_result" or tokens < min_tokens:
        return False
    content = block.get("content")
    return not (isinstance(content, list) and any(isinstance(c, dict) and c.get("cache_control") for c in content))


def _loop_of(messages: Sequence[Any], turn: Turn, policy: PruningPolicy, factor: float) -> _Loop:
    min_tokens = policy.tool_elision_min_tokens
    loop = _Loop(0, [], [], [], [], [])
    pending = 0
    names: list[str] = []
    for i in range(turn.start, turn.end):
        message = messages[i]
        size = MESSAGE_OVERHEAD
        results = saving = 0
        if isinstance(message, dict):
            content = message.get("content")
            if isinstance(content, str):
                size += fast_tokens(len(content), factor) + 1
            elif isinstance(content, list):
                for block in content:
                    if not isinstance(block, dict):
                        continue
                    tokens = fast_block_tokens(block, factor)
                    size += tokens
                    kind = block.get("type")
                    if kind == "tool_result":
                        results += 1
                        if _elidable(block, tokens, min_tokens):
                            saving += max(0, tokens - _PLACEHOLDER_TOKENS)
                    elif kind == "tool_use":
                        name = block.get("name")
                        names.append(name if isinstance(name, str) else "")
        if i == turn.start:
            loop.head = size
        elif results and message.get("role") == "user":
            loop.positions.append(i)
            loop.tokens.append(pending + size)
            loop.saving.append(saving)
            loop.results.append(results)
            loop.tools.append(tuple(names))
            pending, names = 0, []
        else:
            pending += size
    return loop


@dataclass(frozen=True, slots=True)
class _LoopState:
    elided: tuple[int, ...]  # the steps whose large tool outputs are elided
    saved: int  # tokens that saves (estimate)
    point: int | None  # the step at whose request the last compaction was made
    compactions: int
    frontier: int = 0  # steps [0, frontier) keep their form until the next compaction point (see ``_replay_loop``)
    reused: int = 0  # tokens up to the frontier in force before the last compaction (what it still read)


def _replay_loop(
    loop: _Loop, policy: PruningPolicy, rates: CacheRates | None, before: int, frontier_floor: int | None = None
) -> _LoopState:
    """Replay the tool loop request by request (request ``r`` ends at step ``r``) and return the elision in
    force at its last step. ``before``: tokens of the pruned history before the turn (priced when cached).

    The frontier: the steps before the first one a later compaction may still change (the oldest step not
    yet decided, or kept as the newest of its tool) keep their form until the next compaction point, and so
    does the history before the turn. With ``frontier_floor`` set (the prompt-cache planner puts a breakpoint
    on the frontier's last message, ``Plan.loop_frontier``), a compaction rewrites the cache only from the
    frontier on; without it, from the start of ``messages`` (a client's one moving breakpoint reads back 20
    blocks at most, and a long loop has moved further than that since its last compaction).
    ``frontier_floor``: the message tokens the frontier's prefix needs before the API caches it at all (the
    model's minimum cacheable length, less the tools and system prompt): below it, nothing is read there.
    """
    keep = policy.keep_recent_tool_results or 1
    per_tool = policy.keep_latest_per_tool
    trigger = policy.tool_loop_trigger_tokens
    horizon = policy.expected_turns
    saving = loop.saving
    done = 0  # steps [0, done) are decided: elided, or exempt as the newest of their tool then
    exempt: list[int] = []
    saved = 0
    point: int | None = None
    compactions = 0
    latest: dict[str, int] = {}
    start = 0  # the keep window: steps [start, r] hold at least ``keep`` results (or it is every step)
    window = 0
    total = before + loop.head  # the request's tokens before step r
    frontier = 0
    floor = frontier_floor
    stable = total if floor is not None and total >= floor else 0  # up to the frontier: read, not rewritten
    reused = 0
    for r in range(len(loop.positions)):
        if per_tool:
            for name in loop.tools[r]:
                latest[name] = r
        window += loop.results[r]
        while start < r and window - loop.results[start] >= keep:
            window -= loop.results[start]
            start += 1
        if r:
            total += loop.tokens[r - 1]
        if start <= done and not exempt:
            continue
        protected = set(latest.values()) if per_tool else set()
        newly = [s for s in exempt if s not in protected]
        newly += [s for s in range(done, start) if s not in protected]
        pending = sum(saving[s] for s in newly)
        if pending <= 0 or pending < trigger:
            continue
        rewritten = total - saved - stable
        if rates is not None and not _pays(rates, horizon, rewritten, rewritten - pending, 0):
            continue
        exempt = [s for s in (*exempt, *range(done, start)) if s in protected]
        done = max(done, start)
        saved += pending
        point = r
        compactions += 1
        reused = stable
        frontier = min(exempt, default=done)
        if floor is not None:
            stable = before + loop.head + sum(loop.tokens[:frontier]) - sum(saving[:frontier])
            stable = stable if stable >= floor else 0
    if not compactions:
        return _LoopState((), 0, None, 0)
    skipped = set(exempt)
    elided = tuple(s for s in range(done) if s not in skipped and saving[s] > 0)
    return _LoopState(elided, saved, point, compactions, frontier, reused)


class _ToolLoops:
    """Each turn's tool-loop elision, decided as it was while that turn was in progress: the schedule asks for a
    turn once it has replayed the history up to that turn's end, with the compaction then in force. Priced, when
    cached, with the pruned history before the turn as the schedule had it then (so it never changes later)."""

    def __init__(
        self,
        messages: Sequence[Any],
        turns: Sequence[Turn],
        policy: PruningPolicy,
        rates: CacheRates | None,
        estimates: _Estimates,
        frontier_floor: int | None = None,
    ) -> None:
        self.messages = messages
        self.turns = turns
        self.policy = policy
        self.rates = rates
        self.estimates = estimates
        self.frontier_floor = frontier_floor if rates is not None else None
        self.opening = _opening(turns, policy)
        self.found: dict[int, tuple[_Loop, _LoopState]] = {}
        self.any = any(t.end - t.start >= _LOOP_MIN_MESSAGES for t in turns)  # a turn with two steps or more

    def saved(self, index: int, boundary: int, cum: Sequence[int]) -> int:
        """Tokens turn ``index``'s elision saves; ``cum``: the turns before it, after theirs (prefix sums)."""
        turn = self.turns[index]
        last = index == len(self.turns) - 1
        if turn.end - turn.start < _LOOP_MIN_MESSAGES:
            return 0  # fewer than two steps: nothing to elide
        before = 0
        if self.rates is not None:
            opening = self.opening
            before = cum[index]
            if boundary > opening:
                before += self.estimates.region(opening, boundary) - (cum[boundary] - cum[opening])
        loop = _loop_of(self.messages, turn, self.policy, self.estimates.factor)
        state = _replay_loop(loop, self.policy, self.rates, before, self.frontier_floor)
        if state.compactions or last:
            self.found[index] = (loop, state)
        return state.saved

    def elided(self, tail: int) -> dict[int, tuple[int, ...]]:
        """Turn -> its elided tool_result messages, for the turns of the verbatim tail (``turns[tail:]``)."""
        return {
            index: tuple(loop.positions[s] for s in state.elided)
            for index, (loop, state) in sorted(self.found.items())
            if index >= tail and state.elided
        }


def plan_pruning(
    body: Mapping[str, Any],
    policy: PruningPolicy,
    *,
    rates: CacheRates | None,
    scorer: Scorer | None = None,
    frontier_floor: int | None = None,
) -> Plan | None:
    """The plan for ``body``, or ``None`` when nothing is compacted yet (the request goes out unchanged).

    ``frontier_floor`` set: the prompt-cache planner will put a breakpoint on ``Plan.loop_frontier`` (and on
    ``loop_start`` when nothing is compacted), so a tool-loop elision is priced as rewriting only what
    follows it, once the frontier's prefix is long enough to be cached (``_replay_loop``)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or len(messages) < 3:
        return None
    if not (policy.window or policy.tool_elision):
        return None
    model = body.get("model")
    factor = tokenizer_factor(model if isinstance(model, str) else None)
    message_texts: list[tuple[Any, str] | None] = []
    turns = split_turns(messages, factor, message_texts)
    estimates = _Estimates(messages, turns, policy, factor, message_texts)
    tool_loops = None
    if policy.tool_elision and policy.keep_recent_tool_results is not None:
        tool_loops = _ToolLoops(messages, turns, policy, rates, estimates, frontier_floor)
    choose = None
    if policy.window and policy.relevance and policy.relevance_max_turns > 0:
        relevance_scorer = scorer or Bm25Scorer()
        opening_turns = _opening(turns, policy)

        def choose(candidate: int, completed: int) -> tuple[int, ...]:
            """The older turns relevance keeps at a compaction point: those of ``[opening, candidate)`` that
            best match the human messages of the turns from ``candidate`` to the one then in progress."""
            # An agent's turn (a tool loop) is not kept for relevance: it is large, and its memory keeps what a
            # later turn refers to (the instruction, the failures, the files edited).
            region = [i for i in range(opening_turns, candidate) if turns[i].end - turns[i].start <= 2]
            query = "\n".join(message_text(messages[turns[i].start]) for i in range(candidate, completed + 1))
            documents = ["\n".join(text for _, text in estimates.texts(i)) for i in region]
            chosen = select_relevant(
                relevance_scorer, query, documents,
                max_items=policy.relevance_max_turns, min_score=policy.relevance_min_score,
            )  # fmt: skip
            return tuple(sorted(region[i] for i in chosen))

    # Relevance is chosen at the compaction point in force only (scoring every point of a 100-turn replay
    # costs ~20 ms): the schedule prices each point as if all its turns were condensed.
    point = schedule(turns, policy, estimates, rates, tool_loops)
    if point is not None and choose is not None:
        point = dataclasses.replace(point, kept=choose(point.boundary, point.query_turn))
    loops: dict[int, tuple[int, ...]] = {}
    loop_fields: dict[str, Any] = {}
    current_turn = turns[-1]
    if tool_loops is not None:
        loops = tool_loops.elided(point.boundary if point is not None else 0)
        loop_fields = {"loop_elided": loops}
        current = tool_loops.found.get(len(turns) - 1)
        if current is not None:
            loop, state = current
            loop_fields["loop_steps"] = len(state.elided)
            loop_fields["loop_new"] = state.point is not None and state.point == len(loop.positions) - 1
            loop_fields["loop_last_step_tokens"] = loop.tokens[-1] if loop.tokens else 0
            frontier = state.frontier
            loop_fields["loop_frontier"] = loop.positions[frontier - 1] if frontier else current_turn.start
            loop_fields["loop_reused_tokens"] = state.reused
        elif current_turn.end - current_turn.start > 1:  # a loop too short to elide: its human message, as
            loop_fields["loop_frontier"] = current_turn.start  # ``loop_start`` gives it when nothing is compacted
    if point is None:
        return _loops_only(turns, policy, factor, loop_fields) if loops else None
    # the compaction is new on the request that opens the turn; the turn's later round trips replay it
    in_progress = any(
        isinstance(m, dict) and m.get("role") == "user" for m in messages[current_turn.start + 1 : current_turn.end]
    )
    opening = _opening(turns, policy)
    region = list(range(opening, point.boundary))
    if policy.window:
        kept = sorted({*point.kept, *(i for i in region if _pinned(messages, turns[i]))})
        dropped = [i for i in region if i not in set(kept)]
        if not dropped and not (policy.tool_elision and any(estimates.elided(i) < turns[i].tokens for i in kept)):
            # relevance keeps every turn as it is: the compaction would rewrite the cache for nothing
            every = tool_loops.elided(0) if tool_loops is not None else {}
            return _loops_only(turns, policy, factor, {**loop_fields, "loop_elided": every}) if every else None
    else:
        kept, dropped = region, []
    return Plan(
        turns=tuple(turns),
        opening=opening,
        boundary=point.boundary,
        kept=tuple(kept),
        dropped=tuple(dropped),
        query_turn=point.query_turn,
        new_compaction=point.step == len(turns) and not in_progress,
        compactions=point.count,
        elide=policy.tool_elision,
        elide_min_tokens=policy.tool_elision_min_tokens,
        factor=factor,
        facts=estimates.facts,
        **loop_fields,
    )


def _loops_only(turns: Sequence[Turn], policy: PruningPolicy, factor: float, loop_fields: dict[str, Any]) -> Plan:
    """A plan that only elides the tail's tool loops (no history compaction)."""
    return Plan(
        turns=tuple(turns), opening=0, boundary=0, kept=(), dropped=(), query_turn=len(turns) - 1,
        new_compaction=False, compactions=0, elide=False, elide_min_tokens=policy.tool_elision_min_tokens,
        factor=factor, **loop_fields,
    )  # fmt: skip


def region_digest(body: Mapping[str, Any], plan: Plan) -> str:
    """A hash of the history a memory replaces (the dropped turns, the model and the system prompt): the key
    a summary is stored under, so that it is computed once per compaction point."""
    messages = body["messages"]
    hasher = hashlib.sha256()
    hasher.update(_canonical([body.get("model"), body.get("system")]))
    for index in plan.dropped:
        turn = plan.turns[index]
        hasher.update(_canonical(messages[turn.start : turn.end]))
    return hasher.hexdigest()


def _canonical(value: Any) -> bytes:
    try:
        return orjson.dumps(value, default=str)
    except TypeError:  # integers beyond 64 bits: still deterministic
        return repr(value).encode()


def dropped_messages(body: Mapping[str, Any], plan: Plan) -> list[tuple[int, Mapping[str, Any]]]:
    """``(turn, message)`` of every message the plan drops, in order."""
    messages = body["messages"]
    return [(i, m) for i in plan.dropped for m in _turn_messages(messages, plan.turns[i])]


def extractive_memory(body: Mapping[str, Any], plan: Plan, summary: str | None = None) -> str | None:
    """The memory block text for the dropped turns (``None`` when nothing is dropped)."""
    if not plan.dropped:
        return None
    messages = body["messages"]
    facts: list[tuple[int, str, str]] = []
    corrections: list[tuple[int, str, str]] = []
    if summary is None:
        for index in plan.dropped:
            found = plan.facts.get(index)
            if found is None:
                following = plan.turns[index + 1] if index + 1 < len(plan.turns) else None
                opener = messages[following.start] if following is not None else None
                next_user = message_text(opener) if isinstance(opener, dict) and opener.get("role") == "user" else None
                found = extract_facts(_turn_messages(messages, plan.turns[index]), next_user)
            facts.extend((index, role, text) for role, text in found)
        corrections = _corrections(messages, plan)
    return render_memory(plan.dropped[0], plan.dropped[-1], len(plan.dropped), facts, summary, corrections)


def _corrections(messages: Sequence[Any], plan: Plan) -> list[tuple[int, str, str]]:
    """``(turn, kind, value)`` for what the user's messages after the first dropped turn correct (the whole
    history, the verbatim tail too: a correction the model is about to read must not be contradicted by the
    memory before it; the memory then changes once, on the request after the correction)."""
    found: list[tuple[int, str, str]] = []
    for turn in plan.turns[plan.dropped[0] + 1 :]:
        for message in messages[turn.start : turn.end]:
            if isinstance(message, dict) and message.get("role") == "user":
                text = message_text(message)
                if text:
                    found.extend((turn.index, kind, value) for kind, value in corrected_values(text))
    return found


def _elide_block(block: Mapping[str, Any], min_tokens: int, factor: float) -> tuple[Mapping[str, Any], int, int]:
    """The block with its content replaced by a short placeholder (the block, its ``tool_use_id``, ``is_error``
    and ``cache_control`` stay), or the block itself when it is not a large tool result; and its
    ``fast_block_tokens`` before and after (both zero when it stays)."""
    if block.get("type") != "tool_result":
        return block, 0, 0
    tokens = fast_block_tokens(block, factor)
    if not _elidable(block, tokens, min_tokens):
        return block, 0, 0
    text = block_text(block)
    preview = " ".join(text[: _PREVIEW_CHARS * 4].split())  # a prefix of the whole text's (words only cut)
    if len(preview) < _PREVIEW_CHARS and len(text) > _PREVIEW_CHARS * 4:
        preview = " ".join(text.split())
    preview = preview[:_PREVIEW_CHARS]
    placeholder = f"[clawback: earlier tool output elided, about {tokens} tokens"
    placeholder += f'; it began: "{preview}"' if preview else ""
    failures = failure_lines(text)
    if failures:  # a test run's failures outlive the run: the agent is still fixing them
        placeholder += "; its failure lines: " + " | ".join(failures)
    placeholder += "; call the tool again if the output is needed]"
    if 4 + fast_tokens(len(placeholder), factor) >= tokens:
        return block, 0, 0  # no shorter than the output itself (a tiny ``tool_elision_min_tokens``)
    out = dict(block)
    out["content"] = placeholder
    return out, tokens, fast_block_tokens(out, factor)


def _elide_message(message: Any, min_tokens: int, factor: float) -> tuple[Any, int, int]:
    """The message with its large tool results elided (itself when none is), and the tokens of the elided
    blocks before and after."""
    if not isinstance(message, dict):
        return message, 0, 0
    content = message.get("content")
    if not isinstance(content, list):
        return message, 0, 0
    blocks: list[Any] = []
    before = after = 0
    for block in content:
        if isinstance(block, dict):
            block, old, new = _elide_block(block, min_tokens, factor)
            before, after = before + old, after + new
        blocks.append(block)
    if not before:
        return message, 0, 0
    out = dict(message)
    out["content"] = blocks
    return out, before, after


def _with_memory(message: Mapping[str, Any], memory: str) -> dict[str, Any]:
    content = message.get("content")
    blocks: list[Any] = [{"type": "text", "text": content}] if isinstance(content, str) else list(content or [])
    out = dict(message)
    out["content"] = [{"type": "text", "text": memory}, *blocks]
    return out


def render(body: Mapping[str, Any], plan: Plan, memory: str | None) -> tuple[dict[str, Any], int, int]:
    """The pruned request (a new top-level dict; unchanged messages are the caller's own objects), the change
    in tokens that elision made to the kept turns (zero or negative), and the tokens of the placeholders it put
    in (all fast estimates).

    The memory goes first in the first turn after the opening (a kept older turn, or the verbatim tail), which
    always begins with a user message that opens a turn.
    """
    messages: list[Any] = body["messages"]
    out: list[Any] = []
    delta = placeholders = 0

    def elide(message: Any) -> Any:
        nonlocal delta, placeholders
        elided, before, after = _elide_message(message, plan.elide_min_tokens, plan.factor)
        delta += after - before
        placeholders += after
        return elided

    for index in (*range(plan.opening), *plan.kept):
        turn = plan.turns[index]
        out.extend(elide(m) if plan.elide else m for m in messages[turn.start : turn.end])
    tail = plan.turns[plan.boundary].start
    offset = len(out) - tail
    out.extend(messages[tail:])
    for positions in plan.loop_elided.values():  # older steps of the tail's tool loops
        for i in positions:
            out[offset + i] = elide(messages[i])
    if memory is not None:
        position = plan.turns[plan.opening].start  # the opening's messages come first, one for one
        out[position] = _with_memory(out[position], memory)
    result = dict(body)
    result["messages"] = out
    return result, delta, placeholders


def dropped_turns_valid(body: Mapping[str, Any], plan: Plan, pruned_breakpoints: int) -> bool:
    """Whether the strict checks the pruned request passed also hold for the turns it dropped, so that the
    original request is valid without validating it whole (the slowest part of pruning a long tool loop).

    Only for an original whose shape is valid (``validate_messages_request(strict=False)``) and a pruned form
    that passed the strict checks, with ``count_cache_breakpoints`` of it. The pruned form holds every other
    turn whole, so its tool pairing is the original's there; a dropped turn must pair its own tool_use and
    tool_result blocks (the API's ``check_tool_pairing`` on the turn alone; a turn's last message is followed by
    a new human turn, which answers nothing) and the breakpoints of all of them must fit. ``False`` means "not
    shown": the caller validates the original.
    """
    messages = body["messages"]
    marks = 0
    for index in plan.dropped:
        turn = plan.turns[index]
        own = messages[turn.start : turn.end]
        if all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in own):
            continue  # plain text only (a chat's turn): no tool block to pair, no breakpoint
        try:
            check_tool_pairing(own)
        except InvalidRequestError:
            return False
        if own and any(block.get("type") == "tool_use" for block in content_blocks(own[-1])):
            return False  # the turn ends on unanswered tool_use blocks
        marks += sum(1 for message in own for block in content_blocks(message) if block.get("cache_control"))
    return pruned_breakpoints + marks <= MAX_CACHE_BREAKPOINTS
