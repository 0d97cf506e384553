"""Test doubles for the retrieval tests (no test functions here).

``WordHashEmbedder`` stands in for a sentence embedder: deterministic, instant, and
like real embedders blind to identifiers such as error codes (it only sees alphabetic
words), which is what hybrid search must make up for.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

import numpy as np

from retrieval.embedding import normalize_rows

_WORD = re.compile(r"[a-z]{3,}")


class WordHashEmbedder:
    """Bag of alphabetic words (plural 's' stripped) hashed into ``dimension`` signed
    buckets, then L2-normalised; tokens containing digits are ignored."""

    def __init__(self, dimension: int = 256, name: str = "word-hash") -> None:
        self.dimension = dimension
        self.name = name
        self.calls = 0

    def _vector(self, text: str) -> np.ndarray:
        vector = np.zeros(self.dimension, dtype=np.float32)
        for raw in re.findall(r"[A-Za-z0-9]+", text.lower()):
            if not _WORD.fullmatch(raw):
                continue
            word = raw[:-1] if raw.endswith("s") and len(raw) > 3 else raw
            digest = zlib.crc32(word.encode())
            vector[digest % self.dimension] += 1.0 if digest & 1 << 31 else -1.0
        return vector

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return normalize_rows(np.stack([self._vector(t) for t in texts]))

    def embed_query(self, text: str) -> np.ndarray:
        return normalize_rows(self._vector(text)[None, :])[0]


class GatedEmbedder(WordHashEmbedder):
    """Blocks ``embed_documents`` until ``release`` is set, after setting ``entered``:
    lets a test act while an ingest is in the middle of embedding."""

    def __init__(self) -> None:
        super().__init__()
        import threading

        self.entered = threading.Event()
        self.release = threading.Event()

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        self.entered.set()
        if not self.release.wait(timeout=30):
            raise TimeoutError("test never released the embedder")
        return super().embed_documents(texts)
