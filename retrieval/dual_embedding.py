"""Two embedders in one vector: int8 MiniLM for English, USE multilingual across languages.

Neither model serves a multilingual support bot alone (``retrieval/bench/README.md``,
cross-language section): MiniLM ranks English answers best but cannot match a German
question to an English page; USE multilingual v3 matches across 16 languages but ranks
English answers lower. :class:`DualEmbedder` stores both vectors of a chunk side by
side, each scaled by ``1/sqrt(2)``, so one FAISS index holds them and the inner product
of a query with a chunk is a weighted sum of the two cosines::

    document = [m_doc, u_doc] / sqrt(2)
    query    = [a * m_query, b * u_query]          (a^2 + b^2 = 1)
    score    = (a * cos(m_query, m_doc) + b * cos(u_query, u_doc)) / sqrt(2)

The weights are chosen per query by its language (stop-word detection,
``retrieval.analysis.detect_language``): an English query uses both models
(``english_weights``), any other language the multilingual model alone (``(0, 1)``):
MiniLM's vector of a French sentence only adds noise to the ranking. This is
query-language routing without a second index, and the weights are a query-time
choice: a collection keeps working if they change.

Ingestion embeds every chunk twice, so it costs the sum of both models' time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from retrieval.analysis import detect_language
from retrieval.embedding import Embedder, chunk_tokenizer_of
from retrieval.tokens import ChunkTokenizer

DUAL_MODEL_NAME = "minilm-int8+use-multilingual-v3"
ENGLISH_WEIGHTS = (math.sqrt(0.5), math.sqrt(0.5))
"""(MiniLM, USE) weights of an English query's parts (see ``retrieval/bench/README.md``)."""
_HALF = math.sqrt(0.5)


class DualEmbedder:
    """``english`` (MiniLM) and ``multilingual`` (USE) vectors concatenated.

    Chunks are sized in ``english``'s tokenizer (MiniLM reads 256 word-pieces; USE reads
    any length). Concurrency: as safe as the two parts (both allow a query while
    documents are embedded in another thread).
    """

    def __init__(
        self,
        english: Embedder,
        multilingual: Embedder,
        *,
        english_weights: tuple[float, float] = ENGLISH_WEIGHTS,
        route: bool = True,
        name: str = DUAL_MODEL_NAME,
    ) -> None:
        a, b = english_weights
        if a < 0 or b < 0 or a + b == 0:
            raise ValueError("english_weights must be >= 0 and not both 0")
        norm = math.hypot(a, b)
        self.english_weights = (a / norm, b / norm)
        self.route = route
        """False: ``english_weights`` for every query (benchmarks score each part so)."""
        self.english = english
        self.multilingual = multilingual
        self.name = name
        self.dimension = english.dimension + multilingual.dimension

    def chunk_tokenizer(self) -> ChunkTokenizer | None:
        return chunk_tokenizer_of(self.english)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        left = self.english.embed_documents(texts)
        right = self.multilingual.embed_documents(texts)
        return np.ascontiguousarray(np.hstack([left, right]) * _HALF, dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        a, b = self.query_weights(text)
        english = (
            self.english.embed_query(text) * a
            if a > 0
            else np.zeros(self.english.dimension, dtype=np.float32)
        )
        multilingual = (
            self.multilingual.embed_query(text) * b
            if b > 0
            else np.zeros(self.multilingual.dimension, dtype=np.float32)
        )
        return np.concatenate([english, multilingual]).astype(np.float32)

    def query_weights(self, text: str) -> tuple[float, float]:
        """(MiniLM, USE) weights for ``text``: ``english_weights`` for English, else
        the multilingual model alone."""
        if not self.route or detect_language(text) == "en":
            return self.english_weights
        return (0.0, 1.0)
