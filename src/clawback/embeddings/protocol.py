"""The embedder protocol: what the semantic cache asks of a model (local, static or behind an API)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Embedder", "Vectors"]

Vectors = npt.NDArray[np.float32]


class Embedder(Protocol):
    """Texts in, one unit-length float32 row per text out (so a dot product is the cosine similarity).

    ``embed`` is synchronous and may take milliseconds of CPU: callers run it in a worker thread, never on the
    event loop. ``load`` does the slow first-time work (reading weights) so that it can run off start-up too.
    """

    name: str

    @property
    def dim(self) -> int: ...

    def load(self) -> None: ...

    def embed(self, texts: Sequence[str]) -> Vectors: ...
