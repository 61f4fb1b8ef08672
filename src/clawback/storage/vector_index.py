"""Nearest-neighbour search over unit vectors: exact numpy while small, HNSW (usearch) when large.

Why both: an exact scan is one matrix-vector product, has no recall loss and no build cost; measured by
``benchmarks/semantic_lookup.py`` (``benchmarks/README.md``, "Semantic cache") it searches 10 k 384-d rows in
1.3 ms (p50) but 100 k in 18 ms and 1 M in 173 ms (p99 above a second), while the HNSW graph searches 1 M in
0.5 ms p50 with recall@1 0.98 against exact search. The switch point is ``semantic_cache.ann_above`` (50 k).
Between the two HNSW libraries measured, hnswlib built 1 M entries 2.7x faster than usearch on this loaded
machine (509 s vs 1,369 s) but at recall@1 0.94 at the same settings (usearch 0.98); usearch is used because of
that recall, because it ships wheels (hnswlib 0.8 compiled from source here), removes entries natively and stores
f16 (1.3 kB an entry at 1 M). Swapping is this one class.

Ids are 63-bit integers chosen by the caller (the semantic store uses the entry id, the same on every replica).
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from clawback.embeddings.protocol import Vectors

__all__ = ["AnnIndex", "ExactIndex", "VectorIndex", "make_index"]


class VectorIndex(Protocol):
    """Add, remove and search unit vectors by integer id; ``search`` returns (id, cosine) best first."""

    def add(self, entry_id: int, vector: Vectors) -> None: ...

    def remove(self, entry_id: int) -> bool: ...

    def search(self, vector: Vectors, k: int) -> list[tuple[int, float]]: ...

    def __len__(self) -> int: ...

    @property
    def nbytes(self) -> int: ...


class ExactIndex:
    """Rows in one contiguous float32 matrix (grown by doubling); removal moves the last row into the hole."""

    def __init__(self, dim: int, capacity: int = 16) -> None:
        self.dim = dim
        self._rows = np.zeros((capacity, dim), dtype=np.float32)
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._where: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self._where)

    @property
    def nbytes(self) -> int:
        return int(self._rows.nbytes + self._ids.nbytes) + 100 * len(self._where)

    def add(self, entry_id: int, vector: Vectors) -> None:
        if entry_id in self._where:
            self._rows[self._where[entry_id]] = vector
            return
        n = len(self._where)
        if n == len(self._ids):
            self._rows = np.concatenate([self._rows, np.zeros_like(self._rows)])
            self._ids = np.concatenate([self._ids, np.zeros_like(self._ids)])
        self._rows[n] = vector
        self._ids[n] = entry_id
        self._where[entry_id] = n

    def remove(self, entry_id: int) -> bool:
        row = self._where.pop(entry_id, None)
        if row is None:
            return False
        last = len(self._where)
        if row != last:
            self._rows[row] = self._rows[last]
            moved = int(self._ids[last])
            self._ids[row] = moved
            self._where[moved] = row
        return True

    def search(self, vector: Vectors, k: int) -> list[tuple[int, float]]:
        n = len(self._where)
        if n == 0:
            return []
        scores = self._rows[:n] @ vector.reshape(-1)
        k = min(k, n)
        top = np.argpartition(-scores, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-scores[top])]
        return [(int(self._ids[i]), float(scores[i])) for i in top]

    def add_many(self, ids: np.ndarray[Any, Any], vectors: Vectors, threads: int = 0) -> None:
        """Bulk insert of ids not in the index yet (a store loading its rows); ``threads`` is the HNSW index's."""
        n, extra = len(self._where), len(ids)
        if n + extra > len(self._ids):
            capacity = max(16, 1 << (n + extra - 1).bit_length())
            self._rows = np.concatenate([self._rows[:n], np.zeros((capacity - n, self.dim), dtype=np.float32)])
            self._ids = np.concatenate([self._ids[:n], np.zeros(capacity - n, dtype=np.int64)])
        self._rows[n : n + extra] = vectors
        self._ids[n : n + extra] = ids
        self._where.update((int(entry_id), row) for row, entry_id in enumerate(ids.tolist(), n))

    def snapshot(self) -> tuple[np.ndarray[Any, Any], Vectors]:
        """Copies of the ids and rows (an HNSW index is built from them while this one keeps changing)."""
        n = len(self._where)
        return self._ids[:n].copy(), self._rows[:n].copy()


class AnnIndex:
    """An HNSW graph (usearch, cosine metric); vectors kept as float16 (half the memory, recall unchanged on
    unit vectors at this dimension: see the lookup benchmark). ``expansion_add`` 64 (usearch's default is 128):
    on 100 k entries, 2 threads, one run on a loaded machine, it built in 59 s against 108 s at 128, recall@1
    against exact search 0.990 against 0.993; a partition that crosses ``ann_above`` is built on a thread of its own
    while its exact index goes on serving (``SemanticStore._start_switch``)."""

    def __init__(self, dim: int, *, dtype: str = "f16", connectivity: int = 16, expansion_add: int = 64,
                 expansion_search: int = 64) -> None:  # fmt: skip
        from usearch.index import Index

        self.dim = dim
        self._index: Any = Index(ndim=dim, metric="cos", dtype=dtype, connectivity=connectivity,
                                 expansion_add=expansion_add, expansion_search=expansion_search)  # fmt: skip
        self._count = 0

    def __len__(self) -> int:
        return self._count

    @property
    def nbytes(self) -> int:
        return int(self._index.memory_usage)

    def add(self, entry_id: int, vector: Vectors) -> None:
        if self._index.contains(entry_id):
            self._index.remove(entry_id)
            self._count -= 1
        self._index.add(entry_id, vector.reshape(-1))
        self._count += 1

    def add_many(self, ids: np.ndarray[Any, Any], vectors: Vectors, threads: int = 0) -> None:
        """Bulk insert (a partition crossing ``ann_above``); ``threads`` 0: every core."""
        self._index.add(ids, vectors, threads=threads)
        self._count += len(ids)

    def remove(self, entry_id: int) -> bool:
        if not self._index.contains(entry_id):
            return False
        self._index.remove(entry_id)
        self._count -= 1
        return True

    def search(self, vector: Vectors, k: int) -> list[tuple[int, float]]:
        if self._count == 0:
            return []
        found = self._index.search(vector.reshape(-1), min(k, self._count))
        return [(int(key), 1.0 - float(distance)) for key, distance in zip(found.keys, found.distances, strict=True)]


def make_index(dim: int, expected: int, ann_above: int) -> ExactIndex | AnnIndex:
    """The index a partition of ``expected`` entries gets: the one it would have switched to, entry by entry."""
    return AnnIndex(dim) if expected > ann_above else ExactIndex(dim)
