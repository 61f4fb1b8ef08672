"""The semantic store's vector indexes: a partition that crosses ``ann_above`` moves to the HNSW index (built in
bulk with the shipped settings) and still finds, replaces and forgets entries by id as the exact index did."""

from __future__ import annotations

import numpy as np

from clawback.api.usage import Usage
from clawback.storage.response_cache import CachedReply
from clawback.storage.semantic_store import SemanticEntry, SemanticStore
from clawback.storage.vector_index import AnnIndex, ExactIndex

DIM = 32


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.normal(size=(n, DIM)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _entry(entry_id: int, vector: np.ndarray) -> SemanticEntry:
    reply = CachedReply(key=f"{entry_id:032x}", body=b"{}", model="m", usage=Usage(1, 1), namespace="t")
    return SemanticEntry(entry_id, "p" * 32, f"question {entry_id}", vector, reply)


def test_a_partition_above_ann_above_switches_to_hnsw_and_keeps_finding_every_entry() -> None:
    rng = np.random.default_rng(7)
    vectors = _unit(rng, 300)
    store = SemanticStore(dim=DIM, max_bytes=1 << 30, ann_above=100)
    for i, vector in enumerate(vectors[:100], 1):
        store.put(_entry(i, vector), 3600)
    assert isinstance(store._indexes["p" * 32], ExactIndex)
    for i, vector in enumerate(vectors[100:], 101):
        store.put(_entry(i, vector), 3600)
    assert isinstance(store._indexes["p" * 32], AnnIndex)
    found = [store.search("p" * 32, vector, 4)[0][0].id for vector in vectors]
    assert sum(f == i for f, i in zip(found, range(1, 301), strict=True)) >= 297  # recall@1 on its own entries
    assert store.search("p" * 32, vectors[41], 1)[0][1] > 0.999


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
