"""Ranking over loaded collection snapshots: dense, BM25, or both fused by RRF."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, get_args

import numpy as np

from retrieval.collection import Snapshot
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.records import SearchHit

SearchMode = Literal["dense", "bm25", "hybrid"]
SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)


def search_snapshots(
    snapshots: Sequence[Snapshot],
    query: str,
    query_vector: Callable[[], np.ndarray],
    *,
    k: int,
    mode: SearchMode,
    rrf_k: int = 60,
    hybrid_candidates: int = 50,
    language: str | None = None,
) -> list[SearchHit]:
    """The ``k`` best chunks of ``snapshots`` for ``query``.

    ``query_vector`` is called at most once, and only by modes that need it, so BM25
    searches never pay for an embedding. ``dense`` merges the collections by cosine
    score and ``bm25`` by BM25 score; ``hybrid`` takes ``max(k, hybrid_candidates)``
    candidates from each ranker of each collection and fuses all those rankings.
    ``language`` is the query's language for BM25 (None: detected).
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {SEARCH_MODES}, not {mode!r}")
    if k <= 0 or not query.strip() or not any(s.chunks for s in snapshots):
        return []
    depth = k if mode != "hybrid" else max(k, hybrid_candidates)
    rankings: list[list[tuple[float, int, int]]] = []  # (score, snapshot number, row)
    if mode != "dense":
        for number, snapshot in enumerate(snapshots):
            scores, rows = snapshot.bm25.search(query, depth, language)
            rankings.append([(float(s), number, int(r)) for s, r in zip(scores, rows, strict=True)])
    if mode != "bm25":
        vector = query_vector()
        for number, snapshot in enumerate(snapshots):
            scores, rows = snapshot.dense.search(vector, depth)
            rankings.append([(float(s), number, int(r)) for s, r in zip(scores, rows, strict=True)])
    if mode == "hybrid":
        fused = reciprocal_rank_fusion(
            [[(n, r) for _, n, r in ranking] for ranking in rankings], k=rrf_k, limit=k
        )
        best = [(score, n, r) for (n, r), score in fused]
    else:
        best = sorted((hit for ranking in rankings for hit in ranking), key=lambda h: -h[0])[:k]
    return [
        SearchHit.from_chunk(snapshots[n].chunks[r], score, snapshots[n].name)
        for score, n, r in best
    ]
