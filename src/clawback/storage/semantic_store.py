"""Entries of the semantic cache: stored replies with the vector of the question they answered.

In process, entries live in one dict, an LRU order bounded in bytes (reply + vector + text), and one vector
index per *partition* (``clawback.pipeline.semantic_cache.partition``): a lookup searches only the entries whose
tenant, model, system prompt, tools, sampling and earlier conversation are identical to the request's, so no
similarity can ever cross a tenant. Invalidation by key, namespace or tag is the exact cache's
(``CachedReply`` carries all three).

Across restarts and replicas (``semantic_cache.store_url``): every entry is also a row of
``clawback_semantic_entries`` (the vector as float32 bytes: pgvector is not assumed, and the search runs in
each replica's own index anyway), and every change appends to ``clawback_semantic_events``. On start a store
loads the live rows; then ``sync()`` (every ``sync_interval_s``, in a worker thread) applies the events other
replicas wrote since the last one it saw, so every replica's index is kept in step. Writes go to the database
from a worker thread; the request never waits for them.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    delete,
    insert,
    or_,
    select,
)

from clawback.embeddings.protocol import Vectors
from clawback.storage.engine import make_engine
from clawback.storage.response_cache import CachedReply
from clawback.storage.vector_index import AnnIndex, ExactIndex, make_index

__all__ = ["SemanticEntry", "SemanticStore", "SqlSemanticPersistence", "new_entry_id"]

log = logging.getLogger("clawback.semantic_cache")

_metadata = MetaData()
entries_table = Table(
    "clawback_semantic_entries",
    _metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("partition", String(64), nullable=False),
    Column("key", String(64), nullable=False, index=True),
    Column("namespace", String(255), nullable=False, index=True),
    Column("tags", Text, nullable=False, default=""),  # comma-framed (",a,b,"): one tag is LIKE '%,a,%'
    Column("text", Text, nullable=False),
    Column("vector", LargeBinary, nullable=False),
    Column("reply", LargeBinary, nullable=False),
    Column("threshold", Float, nullable=True),
    Column("expires_at", Float, nullable=False, index=True),
)
events_table = Table(
    "clawback_semantic_events",
    _metadata,
    Column("seq", Integer().with_variant(BigInteger, "postgresql"), primary_key=True, autoincrement=True),
    Column("op", String(8), nullable=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("at", Float, nullable=False),
)


def new_entry_id() -> int:
    """63-bit random ids: unique across replicas without a round trip to the database."""
    return secrets.randbits(62) + 1


@dataclass(slots=True)
class SemanticEntry:
    id: int
    partition: str
    text: str
    """The last user turn the stored reply answered (what the guards compare)."""
    vector: Vectors
    reply: CachedReply
    threshold: float | None = None
    """Learned online: the similarity this entry needs, when shadow traffic showed it disagreeing below it."""

    @property
    def size(self) -> int:
        return self.reply.size + int(self.vector.nbytes) + len(self.text.encode()) + 160


class SqlSemanticPersistence:
    """Rows in SQLite (one process, kept across restarts) or PostgreSQL (shared by replicas)."""

    def __init__(self, url: str) -> None:
        self.engine: Engine = make_engine(url)
        _metadata.create_all(self.engine)
        self.last_seq = 0

    def load(self, now: float) -> list[SemanticEntry]:
        with self.engine.connect() as connection:
            self.last_seq = int(connection.execute(select(events_table.c.seq).order_by(
                events_table.c.seq.desc()).limit(1)).scalar() or 0)  # fmt: skip
            rows = connection.execute(select(entries_table).where(entries_table.c.expires_at > now)).all()
        return [self._entry(row) for row in rows]

    @staticmethod
    def _entry(row: Any) -> SemanticEntry:
        reply = CachedReply.loads(row.reply)
        vector = np.frombuffer(row.vector, dtype=np.float32).copy()
        return SemanticEntry(row.id, row.partition, row.text, vector, reply, row.threshold)

    def put(self, entry: SemanticEntry) -> None:
        values = {"id": entry.id, "partition": entry.partition, "text": entry.text, "key": entry.reply.key,
                  "namespace": entry.reply.namespace, "tags": "," + ",".join(entry.reply.tags) + ",",
                  "vector": entry.vector.astype(np.float32).tobytes(), "reply": entry.reply.dumps(),
                  "threshold": entry.threshold, "expires_at": entry.reply.expires_at}  # fmt: skip
        with self.engine.begin() as connection:
            connection.execute(delete(entries_table).where(entries_table.c.id == entry.id))
            connection.execute(insert(entries_table).values(**values))
            connection.execute(insert(events_table).values(op="put", entry_id=entry.id, at=time.time()))

    def delete(self, ids: Iterable[int]) -> None:
        ids = list(ids)
        if not ids:
            return
        with self.engine.begin() as connection:
            connection.execute(delete(entries_table).where(entries_table.c.id.in_(ids)))
            connection.execute(insert(events_table), [{"op": "del", "entry_id": i, "at": time.time()} for i in ids])

    def delete_matching(self, *, key: str | None = None, namespace: str | None = None, tag: str | None = None) -> int:
        """Drop by key, namespace or tag straight in the database (``clawback cache invalidate --direct``); every
        replica drops them at its next sync."""
        conditions = []
        if key:
            conditions.append(entries_table.c.key == key)
        if namespace:
            conditions.append(entries_table.c.namespace == namespace)
        if tag:
            conditions.append(entries_table.c.tags.like(f"%,{tag},%"))
        if not conditions:
            return 0
        with self.engine.connect() as connection:
            ids = [int(i) for i in connection.execute(select(entries_table.c.id).where(or_(*conditions))).scalars()]
        self.delete(ids)
        return len(ids)

    def changes(self) -> tuple[list[SemanticEntry], list[int]]:
        """What other replicas (and this one) wrote since the last call: entries to add, ids to drop."""
        with self.engine.connect() as connection:
            events = connection.execute(select(events_table).where(events_table.c.seq > self.last_seq)
                                        .order_by(events_table.c.seq)).all()  # fmt: skip
            if not events:
                return [], []
            self.last_seq = int(events[-1].seq)
            latest: dict[int, str] = {}
            for event in events:
                latest[int(event.entry_id)] = str(event.op)
            put_ids = [i for i, op in latest.items() if op == "put"]
            rows = (
                connection.execute(select(entries_table).where(entries_table.c.id.in_(put_ids))).all()
                if put_ids
                else []
            )
        found = {row.id: self._entry(row) for row in rows}
        dropped = [i for i, op in latest.items() if op == "del" or i not in found]
        return list(found.values()), dropped

    def purge(self, now: float, keep_events_s: float = 3600.0) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(entries_table).where(entries_table.c.expires_at <= now))
            connection.execute(delete(events_table).where(events_table.c.at < now - keep_events_s))

    def close(self) -> None:
        self.engine.dispose()


class SemanticStore:
    """The in-process entries and their per-partition indexes, optionally mirrored to a database."""

    def __init__(
        self,
        *,
        dim: int,
        max_bytes: int,
        ann_above: int = 50_000,
        persistence: SqlSemanticPersistence | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dim = dim
        self.max_bytes = max_bytes
        self.ann_above = ann_above
        self.persistence = persistence
        self.clock = clock
        self._entries: OrderedDict[int, SemanticEntry] = OrderedDict()
        self._indexes: dict[str, ExactIndex | AnnIndex] = {}
        self._by_key: dict[str, set[int]] = {}
        self._namespaces: dict[str, set[int]] = {}
        self._tags: dict[str, set[int]] = {}
        self._lock = threading.RLock()
        self._switching: dict[str, set[int]] = {}
        """Partitions whose HNSW index is being built: the ids added or dropped since its snapshot."""
        self._switches: list[threading.Thread] = []
        self.bytes = 0
        self.evictions = 0
        if persistence is not None:
            self._load(persistence.load(clock()))

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def partitions(self) -> int:
        return len(self._indexes)

    def index_bytes(self) -> int:
        return sum(index.nbytes for index in self._indexes.values())

    # -- lookups
    def search(self, partition: str, vector: Vectors, k: int) -> list[tuple[SemanticEntry, float]]:
        with self._lock:
            index = self._indexes.get(partition)
            if index is None:
                return []
            now = self.clock()
            found: list[tuple[SemanticEntry, float]] = []
            expired: list[int] = []
            for entry_id, score in index.search(vector, k):
                entry = self._entries.get(entry_id)
                if entry is None:
                    continue
                if entry.reply.expires_at <= now:
                    expired.append(entry_id)
                    continue
                found.append((entry, score))
            for entry_id in expired:
                self._drop(entry_id)
            for entry, _ in found[:1]:
                self._entries.move_to_end(entry.id)
            return found

    def get(self, entry_id: int) -> SemanticEntry | None:
        return self._entries.get(entry_id)

    # -- writes (local first; the database copy is written by ``persist``, from a worker thread)
    def put(self, entry: SemanticEntry, ttl_s: float) -> list[int]:
        """Add ``entry``; returns the ids evicted to stay under ``max_bytes``."""
        entry.reply.expires_at = self.clock() + ttl_s
        if entry.size > self.max_bytes:
            return []
        with self._lock:
            self._add(entry)
            evicted: list[int] = []
            while self.bytes > self.max_bytes and self._entries:
                oldest = next(iter(self._entries))
                self._drop(oldest)
                evicted.append(oldest)
                self.evictions += 1
            return evicted

    def _load(self, entries: list[SemanticEntry]) -> None:
        """The database's live rows at start-up, each partition's index filled in one bulk insert.

        Entry by entry, a partition above ``ann_above`` was first an exact index, then switched to HNSW, then
        took every further row as a single-threaded graph insert: a large store came back slowly. In bulk the
        index is the one it would have switched to (``make_index``) and HNSW inserts on every core."""
        groups: dict[str, list[SemanticEntry]] = {}
        for entry in entries:
            if entry.id in self._entries:
                continue  # ids are the primary key; a repeated one would corrupt the bulk insert below
            self._register(entry)
            groups.setdefault(entry.partition, []).append(entry)
        for partition, group in groups.items():
            index = self._indexes[partition] = make_index(self.dim, len(group), self.ann_above)
            ids = np.array([e.id for e in group], dtype=np.int64)
            index.add_many(ids, np.stack([e.vector.reshape(-1) for e in group]))

    def _add(self, entry: SemanticEntry) -> None:
        if entry.id in self._entries:
            self._drop(entry.id)
        self._register(entry)
        index = self._indexes.get(entry.partition)
        if index is None:
            index = self._indexes[entry.partition] = ExactIndex(self.dim)
        index.add(entry.id, entry.vector)
        changed = self._switching.get(entry.partition)
        if changed is not None:
            changed.add(entry.id)
        elif isinstance(index, ExactIndex) and len(index) > self.ann_above:
            self._start_switch(entry.partition, index)

    def _start_switch(self, partition: str, exact: ExactIndex) -> None:
        """Build the partition's HNSW index on a thread of its own while the exact index goes on serving.

        Built in place, the switch held the store's lock, and the event loop that called ``put``, for the whole
        build: 18-23 s at 50 k entries of 384 dimensions on this machine. usearch releases the GIL while it
        builds (the event loop's longest pause during a 50 k build on another thread: 10 ms), so off the lock
        the build costs requests nothing but a core; one build thread leaves the other core to the gateway.
        The entries added or dropped meanwhile are recorded and applied before the swap."""
        ids, rows = exact.snapshot()
        self._switching[partition] = set()
        thread = threading.Thread(target=self._switch, args=(partition, exact, ids, rows), daemon=True,
                                  name=f"clawback-hnsw-{partition[:8]}")  # fmt: skip
        self._switches.append(thread)
        thread.start()

    def _switch(self, partition: str, exact: ExactIndex, ids: np.ndarray[Any, Any], rows: Vectors) -> None:
        ann = AnnIndex(self.dim)
        ann.add_many(ids, rows, threads=1)
        with self._lock:
            changed = self._switching.pop(partition, set())
            if self._indexes.get(partition) is not exact:
                return  # the partition emptied (and perhaps began again) while the graph was built
            for entry_id in changed:
                entry = self._entries.get(entry_id)
                if entry is not None and entry.partition == partition:
                    ann.add(entry_id, entry.vector)
                else:
                    ann.remove(entry_id)
            self._indexes[partition] = ann

    def wait_for_indexes(self, timeout: float | None = None) -> None:
        """Wait for the HNSW builds under way (tests, benchmarks and ``close``)."""
        for thread in list(self._switches):
            thread.join(timeout)
        self._switches = [t for t in self._switches if t.is_alive()]

    def _register(self, entry: SemanticEntry) -> None:
        """Everything but the vector index: the LRU order, the byte count and the invalidation maps."""
        self._entries[entry.id] = entry
        self.bytes += entry.size
        self._by_key.setdefault(entry.reply.key, set()).add(entry.id)
        self._namespaces.setdefault(entry.reply.namespace, set()).add(entry.id)
        for tag in entry.reply.tags:
            self._tags.setdefault(tag, set()).add(entry.id)

    def _drop(self, entry_id: int) -> bool:
        entry = self._entries.pop(entry_id, None)
        if entry is None:
            return False
        self.bytes -= entry.size
        index = self._indexes.get(entry.partition)
        changed = self._switching.get(entry.partition)
        if changed is not None:
            changed.add(entry_id)
        if index is not None:
            index.remove(entry_id)
            if len(index) == 0:
                del self._indexes[entry.partition]
        for mapping, name in ((self._by_key, entry.reply.key), (self._namespaces, entry.reply.namespace),
                              *((self._tags, t) for t in entry.reply.tags)):  # fmt: skip
            members = mapping.get(name)
            if members is not None:
                members.discard(entry_id)
                if not members:
                    del mapping[name]
        return True

    def invalidate(self, *, key: str | None = None, namespace: str | None = None, tag: str | None = None) -> list[int]:
        """Drop by exact-cache key, namespace or tag (any that is given); returns the dropped ids."""
        with self._lock:
            ids: set[int] = set()
            if key:
                ids |= self._by_key.get(key, set())
            if namespace:
                ids |= self._namespaces.get(namespace, set())
            if tag:
                ids |= self._tags.get(tag, set())
            return [i for i in list(ids) if self._drop(i)]

    def set_threshold(self, entry_id: int, threshold: float) -> SemanticEntry | None:
        entry = self._entries.get(entry_id)
        if entry is not None:
            entry.threshold = threshold
        return entry

    # -- the database copy (called from a worker thread)
    def persist(self, entry: SemanticEntry | None, dropped: list[int]) -> None:
        if self.persistence is None:
            return
        if entry is not None:
            self.persistence.put(entry)
        self.persistence.delete(dropped)

    def sync(self) -> int:
        """Apply other replicas' changes; returns how many entries changed here."""
        if self.persistence is None:
            return 0
        added, dropped = self.persistence.changes()
        with self._lock:
            for entry_id in dropped:
                self._drop(entry_id)
            for entry in added:
                current = self._entries.get(entry.id)
                if current is None or current.threshold != entry.threshold:
                    self._add(entry)
        return len(added) + len(dropped)

    def stats(self) -> dict[str, Any]:
        return {"entries": len(self._entries), "partitions": len(self._indexes), "bytes": self.bytes,
                "max_bytes": self.max_bytes, "evictions": self.evictions,
                "persistent": self.persistence is not None}  # fmt: skip

    def close(self) -> None:
        self.wait_for_indexes()
        if self.persistence is not None:
            self.persistence.close()
