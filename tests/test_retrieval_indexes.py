"""BM25 scores against a textbook implementation; FAISS index building and updates."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from retrieval.bm25 import Bm25Index, analyze
from retrieval.embedding import normalize_rows
from retrieval.fusion import reciprocal_rank_fusion
from retrieval.index import FLAT, HNSW, DenseIndex, IndexSettings

CORPUS = [
    "The apt-get update command refreshes the package lists.",
    "Use dpkg-reconfigure to run the debconf questions of a package again.",
    "Error ERR_DISK_FULL means the partition has no free blocks left.",
    "Packages are verified with signed Release files and apt-key.",
    "The kernel logs to /var/log/kern.log on most systems.",
    "Reboot after a kernel upgrade; the new kernel runs after the reboot.",
]


def reference_bm25(corpus: list[str], query: str, k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    documents = [Counter(analyze(text)) for text in corpus]
    lengths = [sum(d.values()) for d in documents]
    average = sum(lengths) / len(lengths)
    scores = np.zeros(len(corpus))
    for term in analyze(query):
        frequency = sum(1 for d in documents if term in d)
        idf = math.log(1 + (len(corpus) - frequency + 0.5) / (frequency + 0.5))
        for i, document in enumerate(documents):
            tf = document.get(term, 0)
            scores[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / average))
    return scores


def test_analyzer_keeps_compound_tokens_and_their_parts() -> None:
    assert analyze("Run dpkg-reconfigure, see ERR_DISK_FULL in /var/log/kern.log!") == [
        "run",
        "dpkg-reconfigure",
        "dpkg",
        "reconfigur",
        "see",
        "err_disk_full",
        "err",
        "disk",
        "full",
        "var/log/kern.log",
        "var",
        "log",
        "kern",
        "log",
    ]
    assert analyze("The packages are verified") == ["packag", "verifi"]


@pytest.mark.parametrize(
    "query", ["kernel reboot", "ERR_DISK_FULL", "package lists update", "kern.log kernel kernel"]
)
def test_bm25_scores_match_the_textbook_formula(query: str) -> None:
    index = Bm25Index.build(CORPUS)
    expected = reference_bm25(CORPUS, query)

    scores, rows = index.search(query, k=len(CORPUS))

    assert np.allclose(scores, expected[rows], rtol=1e-5)
    assert set(rows.tolist()) == set(np.flatnonzero(expected > 0).tolist())
    assert list(scores) == sorted(scores, reverse=True)


def test_bm25_update_equals_a_rebuild_and_survives_save(tmp_path: Path) -> None:
    index = Bm25Index.build(CORPUS[:4])
    keep = np.array([0, 2, 3])

    updated = index.updated(keep, CORPUS[4:])
    rebuilt = Bm25Index.build([CORPUS[i] for i in keep] + CORPUS[4:])
    updated.save(tmp_path)
    loaded = Bm25Index.load(tmp_path)

    for query in ("kernel package", "ERR_DISK_FULL partition", "dpkg-reconfigure"):
        expected = rebuilt.search(query, 5)
        for candidate in (updated, loaded):
            scores, rows = candidate.search(query, 5)
            assert rows.tolist() == expected[1].tolist()
            assert np.allclose(scores, expected[0])
    assert updated.search("unknownword", 5)[1].size == 0


def random_unit_vectors(count: int, dimension: int = 32, seed: int = 0) -> np.ndarray:
    return normalize_rows(np.random.default_rng(seed).normal(size=(count, dimension)))


def test_flat_index_is_exact_and_switches_to_hnsw_at_the_threshold(tmp_path: Path) -> None:
    settings = IndexSettings(hnsw_threshold=300, use_gpu=False)
    vectors = random_unit_vectors(299)
    flat = DenseIndex.build(vectors, 32, settings)
    query = vectors[17]

    scores, rows = flat.search(query, 5)

    assert flat.kind == FLAT and rows[0] == 17 and scores[0] == pytest.approx(1.0)
    assert rows.tolist() == np.argsort(-(vectors @ query))[:5].tolist()
    grown = flat.updated(None, random_unit_vectors(1, seed=1))
    assert grown.kind == HNSW and grown.size == 300
    appended = grown.updated(None, random_unit_vectors(10, seed=2))
    assert appended.kind == HNSW and appended.size == 310 and grown.size == 300
    assert appended.search(query, 1)[1].tolist() == [17]
    appended.save(tmp_path / "index.faiss")
    assert DenseIndex.load(tmp_path / "index.faiss", settings).search(query, 1)[1].tolist() == [17]


def test_dense_update_drops_rows_and_keeps_order() -> None:
    settings = IndexSettings(use_gpu=False)
    vectors = random_unit_vectors(10)
    index = DenseIndex.build(vectors, 32, settings)
    added = random_unit_vectors(2, seed=3)

    updated = index.updated(np.array([0, 5, 9]), added)

    assert np.allclose(updated.vectors(), np.concatenate([vectors[[0, 5, 9]], added]))
    assert np.allclose(updated.rows(np.array([3, 1])), np.stack([added[0], vectors[5]]))
    assert updated.search(added[1], 1)[1].tolist() == [4]
    assert index.size == 10
    assert DenseIndex.build(vectors[:0], 32, settings).search(vectors[0], 3)[1].size == 0


def test_reciprocal_rank_fusion_rewards_agreement() -> None:
    fused = reciprocal_rank_fusion([[1, 2, 3], [3, 1, 4]], k=60)

    assert [item for item, _ in fused] == [1, 3, 2, 4]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)
    assert reciprocal_rank_fusion([[1, 2], [2, 1]], limit=1) == [
        (1, pytest.approx(1 / 61 + 1 / 62))
    ]
