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

Ingestion embeds every chunk twice. The two models run at the same time, on
``workers`` threads (one per allowed core): both release the GIL while they compute
(ONNX Runtime in its session, numpy in its products), and each runs single-threaded,
so two cores embed twice as much as one. See :class:`_Plan` for how the work is shared.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from retrieval.analysis import detect_language
from retrieval.embedding import Embedder, chunk_tokenizer_of
from retrieval.errors import EmbedderMismatchError
from retrieval.tokens import ChunkTokenizer

DUAL_MODEL_NAME = "minilm-int8+use-multilingual-v3"
ENGLISH_WEIGHTS = (math.sqrt(0.5), math.sqrt(0.5))
"""(MiniLM, USE) weights of an English query's parts (see ``retrieval/bench/README.md``)."""
_HALF = math.sqrt(0.5)
SLICE_TEXTS = 16
"""Texts per call to one part: small enough that the two workers finish together and
that a query's multilingual embedding waits behind at most one slice (~0.15 s for
USE on one core), large enough that the call overhead stays under 1%."""


class DualEmbedder:
    """``english`` (MiniLM) and ``multilingual`` (USE) vectors concatenated.

    Chunks are sized in ``english``'s tokenizer (MiniLM reads 256 word-pieces; USE reads
    any length). ``workers`` threads embed documents (default: one per allowed core,
    the calling thread being one of them); give parts that run on one thread each
    (``OnnxEmbedder(threads=1)``, ``UseEmbedder(threads=1)``).

    Concurrency: ``embed_documents`` may be called from several threads at once (each
    call has its own plan; the caller's thread always works on its own); ``embed_query``
    is as safe as the two parts (both allow a query while documents are embedded in
    another thread).
    """

    def __init__(
        self,
        english: Embedder,
        multilingual: Embedder,
        *,
        english_weights: tuple[float, float] = ENGLISH_WEIGHTS,
        route: bool = True,
        name: str = DUAL_MODEL_NAME,
        workers: int | None = None,
        slice_texts: int = SLICE_TEXTS,
    ) -> None:
        a, b = english_weights
        if a < 0 or b < 0 or a + b == 0:
            raise ValueError("english_weights must be >= 0 and not both 0")
        if slice_texts < 1 or (workers is not None and workers < 1):
            raise ValueError("workers and slice_texts must be at least 1")
        norm = math.hypot(a, b)
        self.english_weights = (a / norm, b / norm)
        self.route = route
        """False: ``english_weights`` for every query (benchmarks score each part so)."""
        self.english = english
        self.multilingual = multilingual
        self.name = name
        self.dimension = english.dimension + multilingual.dimension
        self.workers = workers or min(len(os.sched_getaffinity(0)), 8)
        self.slice_texts = slice_texts
        # the calling thread is one worker; the pool starts its threads on first use
        self._pool = (
            ThreadPoolExecutor(self.workers - 1, thread_name_prefix="dual-embed")
            if self.workers > 1
            else None
        )

    def chunk_tokenizer(self) -> ChunkTokenizer | None:
        return chunk_tokenizer_of(self.english)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return vectors
        plan = _Plan(self, list(texts), vectors)
        helpers: list[Future[None]] = []
        if self._pool is not None:
            helpers = [self._pool.submit(plan.work) for _ in range(self.workers - 1)]
        try:
            plan.work()
        finally:
            for helper in helpers:
                helper.exception()  # wait: no thread may still write into ``vectors``
        plan.raise_failure()
        return vectors

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


class _Plan:
    """One ``embed_documents`` call's work: both parts' slices, shared by the workers.

    A free worker takes the next multilingual slice when no other worker is running
    one, else the next English slice. The multilingual part runs on one worker at a
    time (``UseEmbedder`` serialises its calls with a lock, so a second worker would
    only wait), back to back from start to end; the English part (ONNX Runtime
    sessions run from any number of threads) takes every other worker, and all of
    them once the multilingual slices are done. On two cores USE (~110 chunks per
    CPU-second) finishes first, and MiniLM (~64) ends on both cores: every core stays
    busy until the last slice. A failed slice stops the plan: the workers finish the
    slice they hold and take no other.
    """

    def __init__(self, owner: DualEmbedder, texts: list[str], out: np.ndarray) -> None:
        self.owner = owner
        self.texts = texts
        self.out = out
        size = owner.slice_texts
        starts = range(0, len(texts), size)
        self.english = [(s, min(s + size, len(texts))) for s in starts]
        self.multilingual = list(self.english)
        self.english.reverse()  # popped from the end: slices in input order
        self.multilingual.reverse()
        self.multilingual_busy = False
        self.failure: BaseException | None = None
        self.lock = threading.Lock()

    def take(self) -> tuple[bool, int, int] | None:
        """(is the multilingual part, start, end) of the next slice, or None: no more."""
        with self.lock:
            if self.failure is not None:
                return None
            if self.multilingual and not self.multilingual_busy:
                self.multilingual_busy = True
                return (True, *self.multilingual.pop())
            if self.english:
                return (False, *self.english.pop())
            return None

    def work(self) -> None:
        owner = self.owner
        while (task := self.take()) is not None:
            multilingual, start, end = task
            part = owner.multilingual if multilingual else owner.english
            columns = (
                slice(owner.english.dimension, owner.dimension)
                if multilingual
                else slice(0, owner.english.dimension)
            )
            try:
                vectors = part.embed_documents(self.texts[start:end])
                if vectors.shape != (end - start, part.dimension):
                    raise EmbedderMismatchError(
                        f"embedder {part.name!r} returned shape {vectors.shape}, "
                        f"expected ({end - start}, {part.dimension})"
                    )
                self.out[start:end, columns] = vectors * _HALF
            except BaseException as exc:  # noqa: BLE001 -- handed to the ingest, which re-raises it
                with self.lock:
                    self.failure = self.failure or exc
                return
            finally:
                if multilingual:
                    with self.lock:
                        self.multilingual_busy = False

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure
