"""Ranking over loaded collection snapshots: dense, BM25, or both fused by RRF."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import get_args

import numpy as np

from retrieval.analysis import detect_language
from retrieval.collection import Snapshot
from retrieval.expand import build_passages
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.page_rerank import PageRerank
from retrieval.records import SearchHit, SearchMode

SEARCH_MODES: tuple[str, ...] = get_args(SearchMode)
PASSAGE_CANDIDATES = 3
"""Candidates per requested hit when hits grow into passages (they may absorb others)."""


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
    passage_tokens: int = 0,
    cross_language_bm25_weight: float = 1.0,
    cross_language_passage_tokens: int | None = None,
    page_rerank: PageRerank | None = None,
) -> list[SearchHit]:
    """The ``k`` best chunks of ``snapshots`` for ``query``.

    ``query_vector`` is called at most once, and only by modes that need it, so BM25
    searches never pay for an embedding. ``dense`` merges the collections by cosine
    score and ``bm25`` by BM25 score; ``hybrid`` takes ``max(k, hybrid_candidates)``
    candidates from each ranker of each collection and fuses all those rankings.
    ``language`` is the query's language for BM25 (None: detected).

    ``passage_tokens > 0`` returns passages instead of single chunks: each hit grows
    with adjacent chunks of its own section up to that many cl100k tokens, and lower
    hits it swallows free their slot (``retrieval.expand``); ``PASSAGE_CANDIDATES``
    times ``k`` candidates are ranked so the freed slots can be filled.

    In ``hybrid``, a BM25 ranking counts ``cross_language_bm25_weight`` times as much as
    a dense one when the query's language is none of its collection's document
    languages: keywords rarely match across languages, the multilingual dense ranking
    does.

    For a query in none of the collections' document languages, passages grow up to
    at least ``cross_language_passage_tokens`` when passages are on (None: no change):
    the multilingual ranking finds the right page more surely than the chunk of it that
    answers. ``page_rerank`` (hybrid only, such a query): the best fused page's chunks
    are re-scored with both parts of the dual vector and its best join the fusion as one
    more ranking (``retrieval.page_rerank``).
    """
    if mode not in SEARCH_MODES:
        raise ValueError(f"mode must be one of {SEARCH_MODES}, not {mode!r}")
    if k <= 0 or not query.strip() or not any(s.chunks for s in snapshots):
        return []
    other_language = in_other_language(snapshots, query, language)
    if other_language and passage_tokens > 0 and cross_language_passage_tokens is not None:
        passage_tokens = max(passage_tokens, cross_language_passage_tokens)
    wanted = k * PASSAGE_CANDIDATES if passage_tokens > 0 else k
    depth = wanted if mode != "hybrid" else max(wanted, hybrid_candidates)
    rankings: list[list[tuple[float, int, int]]] = []  # (score, snapshot number, row)
    weights: list[float] = []
    vector: np.ndarray | None = None
    if mode != "dense":
        for number, snapshot in enumerate(snapshots):
            scores, rows = snapshot.bm25.search(query, depth, language)
            rankings.append([(float(s), number, int(r)) for s, r in zip(scores, rows, strict=True)])
            weights.append(_bm25_weight(snapshot, query, language, cross_language_bm25_weight))
    if mode != "bm25":
        vector = query_vector()
        for number, snapshot in enumerate(snapshots):
            scores, rows = snapshot.dense.search(vector, depth)
            rankings.append([(float(s), number, int(r)) for s, r in zip(scores, rows, strict=True)])
            weights.append(1.0)
    if mode == "hybrid":
        keyed = [[(n, r) for _, n, r in ranking] for ranking in rankings]
        fused = reciprocal_rank_fusion(keyed, k=rrf_k, weights=weights)
        if other_language and page_rerank is not None and vector is not None and fused:
            page_vector = page_rerank.page_vector(query, vector)
            keyed.append(page_rerank.ranking(snapshots, fused[0][0], page_vector))
            weights.append(page_rerank.weight)
            fused = reciprocal_rank_fusion(keyed, k=rrf_k, weights=weights)
        best = [(score, n, r) for (n, r), score in fused[:wanted]]
    else:
        merged = (hit for ranking in rankings for hit in ranking)
        best = sorted(merged, key=lambda h: -h[0])[:wanted]
    if passage_tokens > 0:
        return build_passages(snapshots, best, k=k, passage_tokens=passage_tokens)
    return [
        SearchHit.from_chunk(snapshots[n].chunks[r], score, snapshots[n].name)
        for score, n, r in best
    ]


def in_other_language(snapshots: Sequence[Snapshot], query: str, language: str | None) -> bool:
    """Whether the query's language (``language``, else detected) is none of the document
    languages of ``snapshots`` (False when no snapshot knows its languages)."""
    known = [s.bm25.languages for s in snapshots if s.bm25.languages]
    if not known:
        return False
    detected = language or detect_language(query)
    return all(detected not in languages for languages in known)


def _bm25_weight(snapshot: Snapshot, query: str, language: str | None, cross: float) -> float:
    """``cross`` when the query's language is none of the snapshot's document languages."""
    if cross == 1.0 or not snapshot.bm25.languages:
        return 1.0
    detected = language or detect_language(query)
    return 1.0 if detected in snapshot.bm25.languages else cross
