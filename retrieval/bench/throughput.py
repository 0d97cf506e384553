"""Ingestion throughput of the pipeline around the embedder (extract, chunk, BM25,
FAISS, atomic commit), measured with an instant stand-in embedder."""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from retrieval.embedding import normalize_rows
from retrieval.ingest import SourceDocument
from retrieval.store import CollectionStore


class HashEmbedder:
    """Pseudo-random unit vectors seeded by the text: costs microseconds per chunk."""

    def __init__(self, dimension: int = 384) -> None:
        self.name = "hash"
        self.dimension = dimension

    def _vector(self, text: str) -> np.ndarray:
        rng = np.random.default_rng(zlib.crc32(text.encode("utf-8")))
        return rng.standard_normal(self.dimension).astype(np.float32)

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return normalize_rows(np.stack([self._vector(t) for t in texts]))

    def embed_query(self, text: str) -> np.ndarray:
        vector: np.ndarray = normalize_rows(self._vector(text)[None, :])[0]
        return vector


def pipeline_rows(files: Sequence[Path], work_dir: Path, copies: int) -> list[list[object]]:
    """Ingest ``copies`` copies of the corpus as distinct documents, then re-ingest it
    unchanged, then change one document: (step, documents, chunks, seconds, chunks/s)."""
    store = CollectionStore(work_dir / "pipeline", HashEmbedder())
    documents = [
        SourceDocument(f.read_bytes(), f"copy{c}/{f.name}", f.name)
        for c in range(copies)
        for f in files
    ]
    rows: list[list[object]] = []
    start = time.perf_counter()
    store.ingest("corpus", documents)
    seconds = time.perf_counter() - start
    chunks = sum(d.chunk_count for d in store.list_documents("corpus"))
    rows.append(["first ingest", len(documents), chunks, seconds, chunks / seconds])
    start = time.perf_counter()
    store.ingest("corpus", documents)
    rows.append(["re-ingest, unchanged", len(documents), 0, time.perf_counter() - start, "-"])
    first = documents[0]
    changed = SourceDocument(first.data + b"<p>One more line.</p>", first.source, first.name)
    start = time.perf_counter()
    (result,) = store.ingest("corpus", [changed])
    rows.append(
        ["re-ingest 1 changed doc", 1, result.chunk_count, time.perf_counter() - start, "-"]
    )
    return rows
