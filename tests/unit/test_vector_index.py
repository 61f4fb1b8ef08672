"""The semantic store's vector indexes: a partition that crosses ``ann_above`` moves to the HNSW index (built in
bulk with the shipped settings) and still finds, replaces and forgets entries by id as the exact index did."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from clawback.api.usage import Usage
from clawback.storage.response_cache import CachedReply
from clawback.storage.semantic_store import SemanticEntry, SemanticStore, SqlSemanticPersistence
from clawback.storage.vector_index import AnnIndex, ExactIndex

DIM = 32


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _entry(entry_id: int, vector: np.ndarray, partition: str = "p" * 32) -> SemanticEntry:
    reply = CachedReply(key=f"{entry_id:032x}", body=b"{}", model="m", usage=Usage(1, 1), namespace="t")
    return SemanticEntry(entry_id, partition, f"question {entry_id}", vector, reply)


def test_a_partition_above_ann_above_switches_to_hnsw_and_keeps_finding_every_entry() -> None:
    rng = np.random.default_rng(7)
    vectors = _unit(rng, 300)
    store = SemanticStore(dim=DIM, max_bytes=1 << 30, ann_above=100)
    for i, vector in enumerate(vectors[:100], 1):
        store.put(_entry(i, vector), 3600)
    assert isinstance(store._indexes["p" * 32], ExactIndex)
    for i, vector in enumerate(vectors[100:], 101):
        store.put(_entry(i, vector), 3600)
    store.wait_for_indexes()
    assert isinstance(store._indexes["p" * 32], AnnIndex)
    found = [store.search("p" * 32, vector, 4)[0][0].id for vector in vectors]
    assert sum(f == i for f, i in zip(found, range(1, 301), strict=True)) >= 297  # recall@1 on its own entries
    assert store.search("p" * 32, vectors[41], 1)[0][1] > 0.999


def test_entries_added_and_dropped_while_the_hnsw_index_is_built_are_in_it_when_it_takes_over() -> None:
    rng = np.random.default_rng(5)
    vectors = _unit(rng, 160)
    store = SemanticStore(dim=DIM, max_bytes=1 << 30, ann_above=100)
    for i, vector in enumerate(vectors[:100], 1):
        store.put(_entry(i, vector), 3600)
    with store._lock:  # the build may finish, but it cannot take over before the lock is let go
        store.put(_entry(101, vectors[100]), 3600)  # crosses ann_above: the build starts from 101 entries
        assert isinstance(store._indexes["p" * 32], ExactIndex)
        assert store.search("p" * 32, vectors[100], 1)[0][0].id == 101  # the exact index goes on serving
        for i, vector in enumerate(vectors[101:], 102):
            store.put(_entry(i, vector), 3600)
        dropped = store.invalidate(key=f"{7:032x}") + store.invalidate(key=f"{150:032x}")
        assert dropped == [7, 150]
        store.put(_entry(9, vectors[120]), 3600)  # an entry replaced: same id, another question
    store.wait_for_indexes()
    index = store._indexes["p" * 32]
    assert isinstance(index, AnnIndex) and len(index) == len(store) == 158
    assert store.search("p" * 32, vectors[140], 1)[0][0].id == 141  # added during the build
    assert all(e.id not in (7, 150) for e, _ in store.search("p" * 32, vectors[6], 3))
    assert all(e.id not in (7, 150) for e, _ in store.search("p" * 32, vectors[149], 3))
    assert {e.id for e, _ in store.search("p" * 32, vectors[120], 2)} == {9, 121}


def test_the_hnsw_index_replaces_and_removes_by_id() -> None:
    rng = np.random.default_rng(3)
    vectors = _unit(rng, 200)
    index = AnnIndex(DIM)
    index.add_many(np.arange(1, 201, dtype=np.int64), vectors, threads=2)
    assert len(index) == 200
    assert index.search(vectors[9], 1)[0][0] == 10
    index.add(10, vectors[150])  # the same id, another vector: replaced, not duplicated
    assert len(index) == 200
    assert {i for i, _ in index.search(vectors[150], 2)} == {10, 151}
    assert index.remove(10) and not index.remove(10)
    assert len(index) == 199
    assert 10 not in [i for i, _ in index.search(vectors[150], 4)]


def test_a_store_reloaded_from_its_database_gets_the_indexes_it_had_built_entry_by_entry(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    vectors = _unit(rng, 330)
    url = f"sqlite:///{tmp_path / 'semantic.db'}"
    first = SemanticStore(dim=DIM, max_bytes=1 << 30, ann_above=100, persistence=SqlSemanticPersistence(url))
    for i, vector in enumerate(vectors, 1):
        entry = _entry(i, vector, "p" * 32 if i <= 300 else "q" * 32)  # 300 entries in one partition, 30 in another
        first.put(entry, 3600)
        first.persist(entry, [])
    first.close()

    again = SemanticStore(dim=DIM, max_bytes=1 << 30, ann_above=100, persistence=SqlSemanticPersistence(url))
    assert len(again) == 330 and again.bytes == first.bytes
    assert isinstance(again._indexes["p" * 32], AnnIndex) and isinstance(again._indexes["q" * 32], ExactIndex)
    found = [again.search("p" * 32, vector, 4)[0][0].id for vector in vectors[:300]]
    assert sum(f == i for f, i in zip(found, range(1, 301), strict=True)) >= 297
    assert [e.id for e, _ in again.search("q" * 32, vectors[310], 1)] == [311]
    assert again.search("p" * 32, vectors[310], 4)[0][0].id != 311  # partitions stay apart after the reload
    assert again.invalidate(key=f"{311:032x}") == [311]  # the invalidation maps are rebuilt too
    assert again.search("q" * 32, vectors[310], 1)[0][0].id != 311
    again.put(_entry(400, vectors[5], "q" * 32), 3600)  # and the reloaded exact index keeps growing
    assert again.search("q" * 32, vectors[5], 1)[0][0].id == 400
    again.close()
