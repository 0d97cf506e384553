"""Search latency at 1k-100k chunks on synthetic collections derived from a real one.

Synthetic chunk ``i`` copies real chunk ``i mod n`` (text plus a unique token, so BM25
posting lists grow as in a larger corpus) and its vector plus Gaussian noise,
re-normalised, so HNSW sees clustered, realistic directions rather than uniform noise.
Searches run through the same ``search_snapshots`` the store uses, with query vectors
embedded beforehand: the table shows index cost; query embedding is measured apart.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence

import numpy as np

from retrieval.bench.report import percentiles_ms
from retrieval.bm25 import Bm25Index, analyze
from retrieval.collection import Snapshot
from retrieval.embedding import normalize_rows
from retrieval.index import DenseIndex, IndexSettings
from retrieval.records import SearchMode
from retrieval.search import search_snapshots


@dataclasses.dataclass(frozen=True, slots=True)
class SyntheticCollection:
    """The same synthetic chunks behind an exact and an HNSW index, with build times."""

    exact: Snapshot
    graph: Snapshot
    flat_build_s: float
    hnsw_build_s: float
    bm25_build_s: float


def synthetic_collection(
    base: Snapshot, size: int, settings: IndexSettings, seed: int = 0
) -> SyntheticCollection:
    rng = np.random.default_rng(seed)
    rows = np.arange(size) % len(base.chunks)
    noise = rng.standard_normal((size, base.dimension)).astype(np.float32) * 0.02
    vectors = normalize_rows(base.dense.vectors()[rows] + noise)
    chunks = [
        dataclasses.replace(base.chunks[row], chunk_id=f"syn{i}") for i, row in enumerate(rows)
    ]
    timings = []
    indexes = []
    for threshold in (10**12, 1):
        start = time.perf_counter()
        index_settings = dataclasses.replace(settings, hnsw_threshold=threshold)
        indexes.append(DenseIndex.build(vectors, base.dimension, index_settings))
        timings.append(time.perf_counter() - start)
    start = time.perf_counter()
    bm25 = Bm25Index.build([f"{chunk.embedding_text()} syn{i}" for i, chunk in enumerate(chunks)])
    bm25_seconds = time.perf_counter() - start
    exact, graph = (
        Snapshot("synthetic", 1, base.embedder, base.dimension, {}, chunks, index, bm25)
        for index in indexes
    )
    return SyntheticCollection(exact, graph, timings[0], timings[1], bm25_seconds)


def time_searches(
    snapshot: Snapshot,
    queries: Sequence[str],
    vectors: np.ndarray,
    mode: SearchMode,
    repeat: int = 3,
) -> tuple[float, float]:
    """(p50, p99) ms of top-10 searches over ``repeat`` passes of the queries."""
    seconds = []
    for _ in range(repeat):
        for query, vector in zip(queries, vectors, strict=True):
            start = time.perf_counter()
            search_snapshots([snapshot], query, functools.partial(_same, vector), k=10, mode=mode)
            seconds.append(time.perf_counter() - start)
    return percentiles_ms(seconds)


def _same(vector: np.ndarray) -> np.ndarray:
    return vector


def hnsw_recall(exact: Snapshot, approximate: Snapshot, vectors: np.ndarray, k: int = 10) -> float:
    """Share of the exact top-k rows that the HNSW index also returns."""
    found = 0
    for vector in vectors:
        truth = set(exact.dense.search(vector, k)[1].tolist())
        found += len(truth & set(approximate.dense.search(vector, k)[1].tolist()))
    return found / (k * len(vectors))


def rank_bm25_latency(snapshot: Snapshot, queries: Sequence[str]) -> tuple[float, float] | None:
    """The same queries with ``rank_bm25.BM25Okapi`` (same analyzer), for comparison."""
    try:
        from rank_bm25 import BM25Okapi
    except ImportError:
        return None
    model = BM25Okapi([analyze(chunk.embedding_text()) for chunk in snapshot.chunks])
    seconds = []
    for query in queries:
        start = time.perf_counter()
        scores = model.get_scores(analyze(query))
        np.argpartition(-scores, 10)[:10]
        seconds.append(time.perf_counter() - start)
    return percentiles_ms(seconds)


def latency_rows(
    base: Snapshot,
    sizes: Sequence[int],
    queries: Sequence[str],
    vectors: np.ndarray,
    hnsw: IndexSettings,
) -> tuple[list[list[object]], list[list[object]]]:
    """(latency rows, build rows) for every size: flat and HNSW dense, BM25, hybrid."""
    latency: list[list[object]] = []
    builds: list[list[object]] = []
    for size in sizes:
        collection = synthetic_collection(base, size, hnsw)
        for label, snapshot in (("flat", collection.exact), ("hnsw", collection.graph)):
            row: list[object] = [size, label]
            for mode in ("dense", "bm25", "hybrid"):
                row.extend(time_searches(snapshot, queries, vectors, mode))
            latency.append(row)
        recall = hnsw_recall(collection.exact, collection.graph, vectors)
        reference = rank_bm25_latency(collection.exact, queries[:20]) if size <= 10_000 else None
        builds.append(
            [
                size,
                collection.flat_build_s,
                collection.hnsw_build_s,
                collection.bm25_build_s,
                recall,
                reference[0] if reference else "-",
            ]
        )
    return latency, builds
