"""Labelled retrieval evaluation on the Debian Reference (recall@k, MRR per mode).

The corpus is the HTML edition of the Debian Reference, installed offline from the
distribution's own archive::

    apt-get update && apt-get install -y debian-reference-en

which puts 15 files under ``/usr/share/debian-reference/*.en.html``. ``questions.json``
holds questions written from those pages, each with the file and a short passage that
answers it; a hit is relevant when it comes from that file and contains the passage.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from retrieval.bench.report import percentiles_ms
from retrieval.chunking import Chunker
from retrieval.embedding import Embedder, SentenceTransformerEmbedder
from retrieval.extraction import HTML, extract
from retrieval.records import SearchHit, SearchMode
from retrieval.store import CollectionStore

DEFAULT_CORPUS = Path("/usr/share/debian-reference")
QUESTIONS_FILE = Path(__file__).with_name("questions.json")
MODES: tuple[SearchMode, ...] = ("dense", "bm25", "hybrid")
INSTALL_HINT = (
    "the corpus is missing: install it with\n"
    "    apt-get update && apt-get install -y debian-reference-en\n"
    "or pass --corpus DIR with the Debian Reference *.en.html files"
)


@dataclass(frozen=True, slots=True)
class Question:
    """One labelled question: the file and passage that answer it."""

    id: int
    question: str
    document: str
    passage: str


@dataclass(frozen=True, slots=True)
class ModeScores:
    """Retrieval quality and latency of one search mode over all questions."""

    mode: str
    recall_at_1: float
    recall_at_5: float
    recall_at_10: float
    mrr_at_10: float
    p50_ms: float
    p99_ms: float
    misses: list[int]


class TimedEmbedder:
    """Wraps an embedder and adds up the time spent embedding documents."""

    def __init__(self, inner: Embedder) -> None:
        self.inner = inner
        self.name = inner.name
        self.dimension = inner.dimension
        self.seconds = 0.0

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        start = time.perf_counter()
        vectors = self.inner.embed_documents(texts)
        self.seconds += time.perf_counter() - start
        return vectors

    def embed_query(self, text: str) -> np.ndarray:
        return self.inner.embed_query(text)


def load_questions(path: Path = QUESTIONS_FILE) -> list[Question]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return [Question(**item) for item in data["questions"]]


def corpus_files(corpus: Path) -> list[Path]:
    files = sorted(corpus.glob("*.en.html"))
    if not files:
        raise SystemExit(INSTALL_HINT)
    return files


def _normal(text: str) -> str:
    return " ".join(text.split()).lower()


def relevant_rank(hits: Sequence[SearchHit], question: Question) -> int | None:
    """1-based rank of the first relevant hit, or None."""
    passage = _normal(question.passage)
    for rank, hit in enumerate(hits, start=1):
        if hit.source.endswith("/" + question.document) and passage in _normal(hit.text):
            return rank
    return None


def evaluate(
    store: CollectionStore, collection: str, questions: Sequence[Question]
) -> list[ModeScores]:
    """Search every question in every mode (top 10) and score the rankings."""
    results = []
    for mode in MODES:
        for question in questions[:5]:  # warm-up: first calls pay for lazy initialisation
            store.search(collection, question.question, k=10, mode=mode)
        ranks: list[int | None] = []
        seconds: list[float] = []
        for question in questions:
            start = time.perf_counter()
            hits = store.search(collection, question.question, k=10, mode=mode)
            seconds.append(time.perf_counter() - start)
            ranks.append(relevant_rank(hits, question))
        found = [r for r in ranks if r is not None]
        p50, p99 = percentiles_ms(seconds)
        results.append(
            ModeScores(
                mode=mode,
                recall_at_1=sum(r <= 1 for r in found) / len(ranks),
                recall_at_5=sum(r <= 5 for r in found) / len(ranks),
                recall_at_10=len(found) / len(ranks),
                mrr_at_10=sum(1.0 / r for r in found) / len(ranks),
                p50_ms=p50,
                p99_ms=p99,
                misses=[q.id for q, r in zip(questions, ranks, strict=True) if r is None],
            )
        )
    return results


def check_labels(files: Sequence[Path], questions: Sequence[Question]) -> None:
    """Fail early if a labelled passage is not in its document (wrong corpus version)."""
    texts = {
        f.name: _normal(extract(f.read_bytes(), HTML, str(f), f.stem).text)
        for f in files
        if f.name in {q.document for q in questions}
    }
    missing = [q.id for q in questions if _normal(q.passage) not in texts.get(q.document, "")]
    if missing:
        raise SystemExit(f"passages not found in the corpus for questions {missing}")


def truncation_rows(
    files: Sequence[Path], embedder: SentenceTransformerEmbedder, sizes: Sequence[int]
) -> list[list[object]]:
    """For each chunk size: chunk count and word-piece statistics of the embedder input."""
    documents = [extract(f.read_bytes(), HTML, str(f), f.stem) for f in files]
    limit = embedder.max_seq_length
    rows: list[list[object]] = []
    for size in sizes:
        chunker = Chunker(size, min(30, size // 4))
        texts = [
            chunk.embedding_text()
            for document in documents
            for chunk in chunker.chunk(document, document_id="d", source="s", content_hash="0" * 8)
        ]
        pieces = embedder.count_word_pieces(texts)
        over = sum(p > limit for p in pieces)
        rows.append(
            [
                size,
                len(texts),
                statistics.median(pieces),
                float(np.percentile(pieces, 95)),
                max(pieces),
                f"{100.0 * over / len(pieces):.1f}%",
            ]
        )
    return rows
