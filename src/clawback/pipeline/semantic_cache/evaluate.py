"""Score labelled question pairs through the semantic cache stage itself: store ``a``, then ask ``b``.

A pair file is JSONL, one ``{"a": str, "b": str, "same": bool, "kind": str}`` a line: ``same`` says whether
``a``'s answer is a right answer to ``b``; ``kind`` names the pair's class (``paraphrase``, ``negation``,
``number``, ``entity``, ``date``, ``role_swap``, ``unit``, ``language``, ``unrelated``, ``antonym``, ...). Each
pair gets a namespace of its own (a partition of its own), so pairs never see each other's entries; ``a`` is
sent through the stage (a miss, stored), then ``b``: a ``semantic-hit`` reply is a served hit, right when
``same``. The stage runs with the given settings except that every request is eligible and entries stay in
process. Embeddings are memoised across the configurations compared (the guard ablation re-asks the same texts).

The corpus the repository ships (``clawback/workloads/data/semantic_pairs/``): the team's ``calibration.jsonl``
and ``test.jsonl`` (split once; the test split is never read by the calibration), and nine files of pairs
written blind by other people, ``holdout.jsonl`` to ``holdout9.jsonl`` (``HOLDOUT.md``, ``HOLDOUT2.md``, the later
ones in ``benchmarks/README.md``), each scored once blind and since then tuning data. ``TUNING_SPLITS``
(calibration + the nine holdouts) is what ``clawback eval semantic --calibrate`` chooses the threshold on; the test
split and any new blind file are the checks. ``holdout10.jsonl`` and ``holdout11.jsonl`` are scored and spent but
not tuning data yet (each still has a wrong hit no check refuses); score them with ``--pairs``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from clawback.api.usage import Usage
from clawback.config import SemanticCacheSettings, SemanticGuards
from clawback.embeddings import Embedder
from clawback.embeddings.protocol import Vectors
from clawback.pipeline.context import Reply, RequestContext, new_request_id
from clawback.pipeline.semantic_cache.alignment import Aligner
from clawback.pipeline.semantic_cache.calibration import shipped_word_similarity
from clawback.pipeline.semantic_cache.stage import HIT, SemanticCacheStage
from clawback.pipeline.semantic_cache.verify import CHECK_NAMES, verdict
from clawback.pipeline.stage import Pipeline
from clawback.pricing import PriceBook

__all__ = [
    "CORPUS_SPLITS",
    "TUNING_SPLITS",
    "MemoEmbedder",
    "Outcome",
    "Pair",
    "PairFileError",
    "corpus_path",
    "load_pairs",
    "report",
    "score_pairs",
    "similarities",
]

_HOLDOUTS = ("holdout", "holdout2", "holdout3", "holdout4", "holdout5", "holdout6", "holdout7", "holdout8",
             "holdout9")  # fmt: skip
CORPUS_SPLITS = ("calibration", "test", *_HOLDOUTS)
TUNING_SPLITS = ("calibration", *_HOLDOUTS)
EVAL_MODEL = "claude-haiku-4-5"


class PairFileError(ValueError):
    """A pair file that cannot be scored: the message names the line and what is wrong."""


@dataclass(frozen=True, slots=True)
class Pair:
    a: str
    b: str
    same: bool
    kind: str


@dataclass(frozen=True, slots=True)
class Outcome:
    pair: Pair
    hit: bool
    similarity: float

    @property
    def wrong(self) -> bool:
        return self.hit and not self.pair.same


def corpus_path(split: str) -> Path:
    return Path(str(files("clawback.workloads") / "data" / "semantic_pairs" / f"{split}.jsonl"))


def load_pairs(path: str | Path) -> list[Pair]:
    pairs: list[Pair] = []
    try:
        lines = Path(path).read_bytes().splitlines()
    except OSError as exc:
        raise PairFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise PairFileError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict):
            raise PairFileError(f"{path}:{number}: expected an object with a, b, same, kind")
        a, b, same, kind = row.get("a"), row.get("b"), row.get("same"), row.get("kind", "unlabelled")
        if not isinstance(a, str) or not isinstance(b, str) or not a.strip() or not b.strip():
            raise PairFileError(f"{path}:{number}: 'a' and 'b' must be non-empty strings")
        if not isinstance(same, bool):
            raise PairFileError(f"{path}:{number}: 'same' must be true or false")
        if not isinstance(kind, str):
            raise PairFileError(f"{path}:{number}: 'kind' must be a string")
        pairs.append(Pair(a, b, same, kind))
    if not pairs:
        raise PairFileError(f"{path}: no pairs")
    return pairs


class MemoEmbedder:
    """An embedder that remembers every text it embedded (and can embed a whole corpus in batches first)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self._memo: dict[str, Vectors] = {}

    @property
    def dim(self) -> int:
        return self.inner.dim

    def load(self) -> None:
        self.inner.load()

    def prefetch(self, texts: Sequence[str]) -> None:
        missing = list(dict.fromkeys(t for t in texts if t not in self._memo))
        if missing:
            for text, vector in zip(missing, self.inner.embed(missing), strict=True):
                self._memo[text] = vector

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.prefetch(texts)
        return np.stack([self._memo[t] for t in texts])


def similarities(pairs: Sequence[Pair], embedder: MemoEmbedder) -> list[float]:
    embedder.prefetch([t for p in pairs for t in (p.a, p.b)])
    return [float(np.dot(embedder.embed([p.a])[0], embedder.embed([p.b])[0])) for p in pairs]


def _ctx(text: str, namespace: str) -> RequestContext:
    body = {"model": EVAL_MODEL, "max_tokens": 256, "messages": [{"role": "user", "content": text}]}
    return RequestContext(new_request_id(), "messages", body, None, headers=[("x-clawback-cache-namespace", namespace)])


async def _answer(ctx: RequestContext) -> Reply:
    text = ctx.body["messages"][-1]["content"]
    message = {"id": "msg_eval", "type": "message", "role": "assistant", "model": EVAL_MODEL,
               "content": [{"type": "text", "text": f"answer to: {text}"}], "stop_reason": "end_turn",
               "stop_sequence": None, "usage": {"input_tokens": 20, "output_tokens": 40}}  # fmt: skip
    reply = Reply(200, [("content-type", "application/json")], body=orjson.dumps(message))
    reply.usage, reply.finished = Usage(20, 40), True
    return reply


def _settings(base: SemanticCacheSettings, guards: SemanticGuards | None) -> SemanticCacheSettings:
    update: dict[str, Any] = {"enabled": True, "mode": "serve", "default_policy": "all", "store_url": None,
                              "keys": {}, "features": {}}  # fmt: skip
    if guards is not None:
        update["guards"] = guards
    return base.model_copy(update=update)


async def _score(pairs: Sequence[Pair], stage: SemanticCacheStage) -> list[bool]:
    pipeline = Pipeline([stage], _answer)
    hits: list[bool] = []
    for number, pair in enumerate(pairs):
        namespace = f"pair-{number}"
        await pipeline(_ctx(pair.a, namespace))
        await stage.flush()
        reply = await pipeline(_ctx(pair.b, namespace))
        hits.append((CACHE_HIT_HEADER, HIT) in reply.headers)
    return hits


CACHE_HIT_HEADER = "x-clawback-cache"


def score_pairs(pairs: Sequence[Pair], settings: SemanticCacheSettings, embedder: MemoEmbedder,
                price_book: PriceBook, *, guards: SemanticGuards | None = None,
                threshold: float | None = None) -> list[Outcome]:  # fmt: skip
    """Each pair through a fresh stage built from ``settings`` (``guards``/``threshold`` override them)."""
    config = _settings(settings, guards)
    if threshold is not None:
        config = config.model_copy(update={"threshold": threshold})
    stage = SemanticCacheStage(config, price_book, embedder=embedder)
    sims = similarities(pairs, embedder)

    async def run() -> list[bool]:
        try:
            return await _score(pairs, stage)
        finally:
            await stage.aclose()

    hits = asyncio.run(run())
    return [Outcome(p, h, s) for p, h, s in zip(pairs, hits, sims, strict=True)]


def _rates(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    served = sum(o.hit for o in outcomes)
    wrong = sum(o.wrong for o in outcomes)
    positives = sum(o.pair.same for o in outcomes)
    negatives = len(outcomes) - positives
    right = served - wrong
    return {"pairs": len(outcomes), "positives": positives, "negatives": negatives, "served_hits": served,
            "wrong_hits": wrong, "precision": right / served if served else None,
            "recall": right / positives if positives else None,
            "false_hit_rate": wrong / negatives if negatives else None}  # fmt: skip


def report(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Overall and per-kind precision, recall, false-hit rate."""
    by_kind: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_kind[outcome.pair.kind].append(outcome)
    return {**_rates(outcomes), "per_kind": {kind: _rates(items) for kind, items in sorted(by_kind.items())}}


def guard_ablation(pairs: Sequence[Pair], settings: SemanticCacheSettings, embedder: MemoEmbedder,
                   price_book: PriceBook, threshold: float) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Wrong hits per kind with no guard, each guard alone, and all guards; and the paraphrases each guard costs."""
    off = SemanticGuards(**dict.fromkeys(SemanticGuards.model_fields, False))
    configs: dict[str, SemanticGuards] = {"none": off}
    for name in CHECK_NAMES:
        configs[f"only_{name}"] = off.model_copy(update={name: True})
    configs["all"] = settings.guards
    out: dict[str, dict[str, Any]] = {}
    for label, guards in configs.items():
        outcomes = score_pairs(pairs, settings, embedder, price_book, guards=guards, threshold=threshold)
        result = report(outcomes)
        out[label] = {"precision": result["precision"], "recall": result["recall"],
                      "served_hits": result["served_hits"], "wrong_hits": result["wrong_hits"],
                      "wrong_by_kind": {k: v["wrong_hits"] for k, v in result["per_kind"].items()}}  # fmt: skip
    # what each check rejects among true paraphrases (its recall cost, at any similarity), every other check off
    aligner = Aligner(embedder, settings.word_similarity or shipped_word_similarity())
    for name in CHECK_NAMES:
        alone = configs[f"only_{name}"]
        out[f"only_{name}"]["paraphrases_rejected"] = sum(
            1 for p in pairs if p.same and verdict(p.a, p.b, alone, aligner) is not None
        )
    return out
