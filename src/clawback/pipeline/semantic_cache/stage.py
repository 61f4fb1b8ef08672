"""The semantic cache stage: an equivalent question, within one partition, is answered from a stored reply.

Order: right after the exact cache (``pipeline/build.py``), so an identical request never pays for an
embedding. Per request:

1. ``eligibility`` (cheap, no model): ineligible requests pass straight on, never embedded;
2. the partition key (``partition.partition_key``): tenant, model, system, tools, sampling and the whole
   conversation before the last user turn must be identical;
3. the last user turn is embedded in a worker thread (one thread: requests queue instead of fighting over
   two cores), never on the event loop;
4. the ``candidates`` nearest entries *of that partition* above the threshold (the entry's own learned
   threshold when it has one) go through the checks (``verify.verdict``: the guards, the near-copy check, the
   word alignment), in the same worker; the first that passes is the match;
5. ``mode: serve`` answers with it (``x-clawback-cache: semantic-hit``, ``x-clawback-cache-key`` of the
   entry, the similarity and entry id in the ledger row's labels, the saving booked as ``semantic_cache``);
   ``mode: shadow`` records the would-be hit and lets the request go on; once the real reply is in, it
   compares the two (``agreement``) and, on disagreement, raises that entry's threshold above the similarity
   it disagreed at (a per-entry threshold learned online, as vCache does);
6. a miss stores the reply (JSON, or a stream tee'd as it passes) as a new entry of the partition.

The model loads in a worker thread when the stage is built (a gateway with the stage off never loads it); a
request that arrives before it is ready waits for it in the worker, not on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from clawback.api.usage import Usage
from clawback.config import ConfigError, SemanticCacheSettings, SemanticGuards
from clawback.embeddings import Embedder, resolve_model_path, shared_embedder
from clawback.embeddings.local import ModelNotFoundError
from clawback.embeddings.protocol import Vectors
from clawback.pipeline.context import Reply, RequestContext
from clawback.pipeline.exact_cache import (
    CACHE_HEADER,
    NAMESPACE_HEADER,
    TAGS_HEADER,
    cache_key,
    hit_saving,
    replay_entry,
    requested_ttl,
    storable_message,
    tee_message,
)
from clawback.pipeline.semantic_cache.alignment import Aligner
from clawback.pipeline.semantic_cache.calibration import shipped_threshold, shipped_word_similarity
from clawback.pipeline.semantic_cache.guards import check
from clawback.pipeline.semantic_cache.partition import eligibility, partition_key
from clawback.pipeline.semantic_cache.verify import verdict
from clawback.pipeline.stage import CallNext, Chain
from clawback.pricing import PriceBook
from clawback.storage.response_cache import CachedReply
from clawback.storage.semantic_store import SemanticEntry, SemanticStore, SqlSemanticPersistence, new_entry_id

__all__ = ["Match", "SemanticCacheStage"]

log = logging.getLogger("clawback.semantic_cache")

HIT = "semantic-hit"
_COUNTERS = ("hits", "misses", "bypass", "stored", "shadow_hits", "shadow_agree", "shadow_disagree", "store_errors",
             "sync_errors")  # fmt: skip
LEARN_MARGIN = 0.005


@dataclass(frozen=True, slots=True)
class Match:
    entry: SemanticEntry
    similarity: float


def _text_of(body: bytes) -> str:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    blocks = message.get("content") if isinstance(message, dict) else None
    return "\n".join(b.get("text", "") for b in blocks or [] if isinstance(b, dict) and b.get("type") == "text")


class SemanticCacheStage:
    name = "semantic_cache"

    def __init__(self, settings: SemanticCacheSettings, price_book: PriceBook, *, embedder: Embedder | None = None,
                 store: SemanticStore | None = None) -> None:  # fmt: skip
        self.settings = settings
        self.price_book = price_book
        if embedder is None:
            try:  # a wrong name stops start-up here, with the fix in the message
                resolve_model_path(settings.model)
            except ModelNotFoundError as exc:
                raise ConfigError(f"semantic_cache.model: {exc}") from None
            embedder = shared_embedder(settings.model, settings.embed_threads)
        self.embedder = embedder
        word_similarity = settings.word_similarity or shipped_word_similarity()
        self.aligner = Aligner(embedder, word_similarity)
        self.threshold = settings.threshold if settings.threshold is not None else shipped_threshold()
        self._embedding = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clawback-embed")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="clawback-semantic-db")
        self._loading = self._embedding.submit(self.embedder.load)
        self._store = store
        self._store_lock = threading.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sync_task: asyncio.Task[None] | None = None
        self.counters: Counter[str] = Counter(dict.fromkeys(_COUNTERS, 0))
        self.rejected_by: Counter[str] = Counter()

    # -- the store, built once the model's dimension is known (in the embedding worker)
    def _get_store(self) -> SemanticStore:
        if self._store is None:
            with self._store_lock:
                if self._store is None:
                    persistence = SqlSemanticPersistence(self.settings.store_url) if self.settings.store_url else None
                    self._store = SemanticStore(dim=self.embedder.dim, max_bytes=self.settings.max_bytes,
                                                ann_above=self.settings.ann_above, persistence=persistence)  # fmt: skip
        return self._store

    @property
    def store(self) -> SemanticStore:
        return self._get_store()

    async def _run(self, executor: ThreadPoolExecutor, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, fn, *args)

    def _embed_one(self, text: str) -> Vectors:
        self._get_store()
        return np.asarray(self.embedder.embed([text])[0], dtype=np.float32)

    # -- matching (also what ``clawback eval semantic`` scores)
    def _lookup(self, partition: str, text: str, look: bool) -> tuple[Vectors, Match | None]:
        """In the embedding worker: the question's vector and, when ``look``, its match."""
        vector = self._embed_one(text)
        return vector, (self.choose(partition, vector, text) if look else None)

    def choose(self, partition: str, vector: Vectors, text: str) -> Match | None:
        """The best candidate of ``partition`` that clears its threshold and every guard, or None. Runs in the
        embedding worker (the alignment check may embed words)."""
        for entry, similarity in self._get_store().search(partition, vector, self.settings.candidates):
            needed = max(self.threshold, entry.threshold or 0.0)
            if similarity < needed:
                if similarity < self.threshold:
                    break  # best first: nothing further clears the global threshold
                self.rejected_by["learned_threshold"] += 1
                continue
            reason = verdict(entry.text, text, self.settings.guards, self.aligner)
            if reason is not None:
                self.rejected_by[reason] += 1
                continue
            return Match(entry, similarity)
        return None

    # -- the stage
    def bind(self, chain: Chain) -> None:
        pass

    async def handle(self, ctx: RequestContext, call_next: CallNext) -> Reply:
        decision = eligibility(ctx, self.settings)
        if decision.mode == "off" or decision.text is None:
            self.counters["bypass"] += 1
            return await call_next(ctx)
        self._ensure_sync()
        scope = ctx.tenant.scope
        namespace = ctx.header(NAMESPACE_HEADER) or scope
        beta = ctx.header("anthropic-beta")
        partition = partition_key(scope, namespace, ctx.body, beta)
        text = decision.text
        vector, match = await self._run(self._embedding, self._lookup, partition, text, decision.mode == "on")
        if match is not None:
            labels = {"semantic_similarity": f"{match.similarity:.4f}", "semantic_entry": str(match.entry.id)}
            if self.settings.mode == "serve":
                ctx.tenant.labels.update(labels, semantic_cache="hit")
                return self._hit(ctx, match)
            ctx.tenant.labels.update(labels, semantic_cache="shadow")
            self.counters["shadow_hits"] += 1
        else:
            self.counters["misses"] += 1
        reply = await call_next(ctx)
        if reply.status != 200:
            return reply
        key = cache_key(scope, namespace, ctx.body, beta)
        tags = tuple(t.strip() for t in (ctx.header(TAGS_HEADER) or "").split(",") if t.strip())
        ttl = self._ttl(ctx)

        def done(body: bytes, message: dict[str, Any] | None) -> None:
            stored = storable_message(body, message, self.settings.max_entry_bytes)
            if stored is None:
                return
            if match is None:
                entry = SemanticEntry(new_entry_id(), partition, text, vector, CachedReply(
                    key=key, body=body, model=ctx.model, usage=Usage.from_api(stored.get("usage")),
                    namespace=namespace, tags=tags, saved_micro_usd=ctx.savings.total))  # fmt: skip
                self._spawn(self._put(entry, ttl))
            else:
                self._spawn(self._compare(match, body))

        if reply.stream is None:
            if reply.body:
                done(reply.body, None)
        else:
            reply.stream = self._tee(reply, reply.stream, done)
        return reply

    async def _tee(self, reply: Reply, inner: AsyncIterator[bytes], done: Any) -> AsyncIterator[bytes]:
        async for chunk in tee_message(reply, inner, self.settings.max_entry_bytes):
            if isinstance(chunk, bytes):
                yield chunk
            else:
                done(orjson.dumps(chunk), chunk)

    def _ttl(self, ctx: RequestContext) -> float:
        return requested_ttl(ctx, self.settings.ttl_s)

    def _hit(self, ctx: RequestContext, match: Match) -> Reply:
        self.counters["hits"] += 1
        ctx.cache_status = HIT
        entry = match.entry.reply
        ctx.savings.add(self.name, hit_saving(self.price_book, ctx, entry))
        headers = [(CACHE_HEADER, HIT), ("x-clawback-cache-key", entry.key),
                   ("x-clawback-semantic-similarity", f"{match.similarity:.4f}")]  # fmt: skip
        return replay_entry(ctx, entry, headers)

    # -- background work: stores, shadow comparisons, replica sync
    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counters["background_errors"] += 1
            log.error("semantic cache: background task failed", exc_info=task.exception())

    async def _put(self, entry: SemanticEntry, ttl: float) -> None:
        store = self._get_store()
        evicted = store.put(entry, ttl)
        self.counters["stored"] += 1
        if store.persistence is not None:
            try:
                await self._run(self._writes, store.persist, entry, evicted)
            except Exception as exc:  # the database down: the entry still serves from this replica
                self.counters["store_errors"] += 1
                log.warning("semantic cache: cannot persist an entry: %s", exc)

    async def _compare(self, match: Match, real_body: bytes) -> None:
        """Shadow mode: does the stored reply agree with the real one? Disagreement raises the entry's threshold."""
        stored_text, real_text = _text_of(match.entry.reply.body), _text_of(real_body)
        vectors: Vectors = await self._run(self._embedding, self.embedder.embed, [stored_text, real_text])
        agreement = float(np.dot(vectors[0], vectors[1]))
        agrees = agreement >= self.settings.agreement_threshold and check(stored_text, real_text, _NUMBERS) is None
        self.counters["shadow_agree" if agrees else "shadow_disagree"] += 1
        if not agrees and self.settings.learn_thresholds:
            learned = min(1.0, match.similarity + LEARN_MARGIN)
            entry = self._get_store().set_threshold(match.entry.id, learned)
            if entry is not None and self._get_store().persistence is not None:
                with contextlib.suppress(Exception):
                    await self._run(self._writes, self._get_store().persist, entry, [])

    def _ensure_sync(self) -> None:
        if self._sync_task is None and self.settings.store_url:
            self._sync_task = asyncio.get_running_loop().create_task(self._sync_loop())

    async def _sync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.sync_interval_s)
            try:
                await self.sync()
            except Exception as exc:
                self.counters["sync_errors"] += 1
                log.warning("semantic cache: replica sync failed: %s", exc)

    async def sync(self) -> int:
        """Apply the changes other replicas wrote (also called by tests to avoid waiting)."""
        await self._run(self._embedding, self._get_store)
        return int(await self._run(self._writes, self._get_store().sync))

    # -- admin
    async def invalidate(self, *, key: str | None = None, namespace: str | None = None, tag: str | None = None) -> int:
        await self._run(self._embedding, self._get_store)
        store = self._get_store()
        dropped = store.invalidate(key=key, namespace=namespace, tag=tag)
        if store.persistence is not None:
            await self._run(self._writes, store.persist, None, dropped)
        return len(dropped)

    async def flush(self) -> None:
        """Wait for pending stores and shadow comparisons (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def report(self) -> dict[str, Any]:
        """Counters for ``GET /admin/cache/stats``: hits, misses, shadow agreement, why candidates were refused."""
        store = self._store.stats() if self._store is not None else {"entries": 0}
        shadow = self.counters["shadow_agree"] + self.counters["shadow_disagree"]
        return {"mode": self.settings.mode, "threshold": self.threshold, "model": self.embedder.name,
                "model_loaded": self._loading.done(), **dict(self.counters),
                "rejected_by": dict(self.rejected_by),
                "shadow_agreement": self.counters["shadow_agree"] / shadow if shadow else None, **store}  # fmt: skip

    async def aclose(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        await self.flush()
        # not waiting: a model still loading (tens of seconds) must not hold shutdown; database writes are waited for
        self._embedding.shutdown(wait=False, cancel_futures=True)
        self._writes.shutdown(wait=True)
        if self._store is not None:
            self._store.close()


_NUMBERS = SemanticGuards(**{name: name == "numbers" for name in SemanticGuards.model_fields})
"""Shadow agreement also needs the same numbers in both replies (a price that differs is a disagreement)."""
