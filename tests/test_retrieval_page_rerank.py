"""Questions in another language than the documents: wider passages
(``cross_language_passage_tokens``) and the page rerank (``retrieval.page_rerank``: the
best page's chunks, re-scored with both parts of the dual vector, join the fusion).
Fakes: the "multilingual" part only sees a page's topic (the same for every chunk of a
page, like USE across languages), the "English" part sees words (like MiniLM, which
matches identifiers inside a page)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from retrieval.config import RetrievalConfig
from retrieval.dual_embedding import DualEmbedder
from retrieval.embedding import normalize_rows
from retrieval.page_rerank import PageRerank, page_rerank_for
from retrieval.store import CollectionStore
from tests.support.embedders import WordHashEmbedder

NUMBERS = """# Numbers

The numbers guide: numbers of every size.

## Integers

Numbers without fractions: smallint, integer.

## Serial

Serial and bigserial columns hold values up to two billion, see backup.
"""
BACKUP = """# Backup

Run pg_dump to write a backup of one database.
"""
GERMAN = "Welche Werte speichern serial und bigserial Zahlen?"
ENGLISH = "Which values do serial and bigserial numbers hold?"


class TopicEmbedder:
    """Counts each topic's words (in any language): a page-level, cross-language signal
    that cannot tell the chunks of one page apart."""

    TOPICS = ({"number", "numbers", "zahlen"}, {"backup", "sicherung"})

    def __init__(self) -> None:
        self.dimension = 3
        self.name = "topics"

    def _vector(self, text: str) -> np.ndarray:
        words = re.findall(r"[a-zäöü]+", text.lower())
        counts = [sum(word in topic for word in words) for topic in self.TOPICS]
        return np.array([*counts, 0.01], dtype=np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return normalize_rows(np.stack([self._vector(t) for t in texts]))

    def embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = normalize_rows(self._vector(text)[None, :])[0]
        return vector


def dual() -> DualEmbedder:
    english = WordHashEmbedder(dimension=64, name="english")
    return DualEmbedder(english, TopicEmbedder(), english_weights=(3.0, 1.0), workers=1)


@pytest.fixture
def store(tmp_path: Path) -> CollectionStore:
    (tmp_path / "numbers.md").write_text(NUMBERS)
    (tmp_path / "backup.md").write_text(BACKUP)
    # BM25's vote muted for other languages: the dense and page rankings decide
    config = RetrievalConfig(passage_tokens=0, cross_language_bm25_weight=0.0)
    built = CollectionStore(tmp_path / "store", dual(), config)
    built.ingest("docs", [tmp_path / "numbers.md", tmp_path / "backup.md"])
    return built


def reranking(store: CollectionStore, chunks: int = 1, weight: float = 1.0) -> CollectionStore:
    tuned = dataclasses.replace(store.config, page_rerank_chunks=chunks, page_rerank_weight=weight)
    return CollectionStore(store.root, store.embedder, tuned)


def test_the_page_vector_holds_both_parts_at_the_english_weights() -> None:
    embedder = dual()
    rerank = PageRerank(embedder)
    english_query = embedder.embed_query(ENGLISH)
    assert rerank.page_vector(ENGLISH, english_query) is english_query  # both parts already
    routed = embedder.embed_query(GERMAN)
    assert not routed[:64].any()  # the search ranked with the multilingual part alone
    a, b = embedder.english_weights
    vector = rerank.page_vector(GERMAN, routed)
    english, multilingual = embedder.english, embedder.multilingual
    np.testing.assert_allclose(vector[:64], english.embed_query(GERMAN) * a, rtol=1e-6)
    np.testing.assert_allclose(vector[64:], multilingual.embed_query(GERMAN) * b, rtol=1e-6)


def test_the_ranking_is_the_best_pages_chunks_by_the_page_vector(store: CollectionStore) -> None:
    snapshot = store.snapshot("docs")
    rerank = PageRerank(store.embedder, chunks=2)  # type: ignore[arg-type]
    vector = rerank.page_vector(GERMAN, store.embedder.embed_query(GERMAN))
    page = [r for r, c in enumerate(snapshot.chunks) if c.source.endswith("numbers.md")]
    ranked = rerank.ranking([snapshot], (0, page[-1]), vector)
    scores = snapshot.dense.vectors()[page] @ vector
    expected = [page[int(i)] for i in np.argsort(-scores)[:2]]
    assert ranked == [(0, row) for row in expected]
    assert "bigserial" in snapshot.chunks[expected[0]].text


def test_a_question_in_another_language_gets_the_chunk_its_identifiers_name(
    store: CollectionStore,
) -> None:
    plain = store.search("docs", GERMAN, k=1, mode="hybrid")
    # the multilingual part finds the page but ranks its serial chunk last of three
    assert plain[0].source.endswith("numbers.md") and "bigserial" not in plain[0].text
    reranked = reranking(store).search("docs", GERMAN, k=1, mode="hybrid")
    assert "bigserial" in reranked[0].text


def test_english_questions_and_other_modes_are_left_alone(store: CollectionStore) -> None:
    on = reranking(store, chunks=3)
    for query, mode in [(ENGLISH, "hybrid"), (GERMAN, "dense"), (GERMAN, "bm25")]:
        assert on.search("docs", query, k=3, mode=mode) == store.search(  # type: ignore[arg-type]
            "docs",
            query,
            k=3,
            mode=mode,  # type: ignore[arg-type]
        )


def test_off_by_default_and_only_for_a_two_part_embedder() -> None:
    assert RetrievalConfig().page_rerank_chunks == 0
    assert page_rerank_for(dual(), 0, 0.5) is None
    assert page_rerank_for(WordHashEmbedder(), 2, 0.5) is None
    assert page_rerank_for(dual(), 2, 0.5) is not None
    with pytest.raises(ValueError, match="page_rerank"):
        RetrievalConfig(page_rerank_chunks=-1)
    with pytest.raises(ValueError, match="page_rerank"):
        RetrievalConfig(page_rerank_weight=0.0)


LONG_SECTION = """# Replication

A standby server replays the write-ahead log that the primary server streams to it.
The primary_conninfo setting names the host, the port and the user of the primary.
The standby connects again when the connection drops, after wal_retrieve_retry_interval.
A standby promoted by pg_promote stops replaying and starts to accept writes of its own.
"""


def test_questions_in_another_language_get_wider_passages(tmp_path: Path) -> None:
    (tmp_path / "replication.md").write_text(LONG_SECTION)
    config = RetrievalConfig(
        chunk_tokens=32, chunk_overlap=0, passage_tokens=40, cross_language_passage_tokens=200
    )
    store = CollectionStore(tmp_path / "store", WordHashEmbedder(), config)
    store.ingest("docs", [tmp_path / "replication.md"])
    assert len(store.snapshot("docs").chunks) >= 3
    english_question = "How does the standby use primary_conninfo?"
    german_question = "Wie nutzt der standby die primary_conninfo?"
    english = store.search("docs", english_question, k=1)[0]
    german = store.search("docs", german_question, k=1)[0]
    assert "primary_conninfo" in english.text and "primary_conninfo" in german.text
    assert "pg_promote" in german.text and "pg_promote" not in english.text
    narrow = dataclasses.replace(config, cross_language_passage_tokens=40)
    plain = CollectionStore(store.root, WordHashEmbedder(), narrow)
    assert "pg_promote" not in plain.search("docs", german_question, k=1)[0].text
    # a floor: a larger passage_tokens still wins
    wide = dataclasses.replace(config, passage_tokens=200, cross_language_passage_tokens=40)
    wider = CollectionStore(store.root, WordHashEmbedder(), wide)
    assert "pg_promote" in wider.search("docs", german_question, k=1)[0].text
    with pytest.raises(ValueError, match="passage_tokens"):
        RetrievalConfig(cross_language_passage_tokens=-1)
