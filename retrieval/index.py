"""Dense vector index over one collection version (FAISS, inner product on unit vectors).

Small collections use exact search (``IndexFlatIP``); from ``hnsw_threshold`` chunks on,
an ``IndexHNSWFlat`` graph (inner-product metric) trades a little recall for speed.
Exact indexes move to the GPU when faiss-gpu is installed and sees a device; the CPU
copy is always kept, because it is what gets saved and what vectors are read back from.
"""

from __future__ import annotations

import functools
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

FLAT = "flat"
HNSW = "hnsw"


@dataclass(frozen=True, slots=True)
class IndexSettings:
    """How to build a :class:`DenseIndex` (see :class:`retrieval.config.RetrievalConfig`)."""

    hnsw_threshold: int = 50_000
    hnsw_m: int = 32
    ef_construction: int = 80
    ef_search: int = 128
    use_gpu: bool | None = None


@functools.cache
def _gpu_resources() -> Any | None:
    """One ``StandardGpuResources`` per process, or None without faiss-gpu or a GPU."""
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return None
    return faiss.StandardGpuResources()


class DenseIndex:
    """FAISS index whose row ``i`` is chunk ``i`` of the collection version.

    Never mutated after construction: updates return a new index, so concurrent
    ``search`` calls need no lock (except on the GPU, where FAISS indexes are not
    thread-safe and an internal lock serialises searches).
    """

    def __init__(self, cpu_index: Any, settings: IndexSettings) -> None:
        self._cpu = cpu_index
        self.settings = settings
        self.kind = HNSW if isinstance(cpu_index, faiss.IndexHNSWFlat) else FLAT
        if self.kind == HNSW:
            cpu_index.hnsw.efSearch = settings.ef_search
        self._gpu: Any | None = None
        self._gpu_lock = threading.Lock()
        resources = _gpu_resources() if settings.use_gpu is not False else None
        if resources is not None and self.kind == FLAT:
            self._gpu = faiss.index_cpu_to_gpu(resources, 0, cpu_index)

    @classmethod
    def build(cls, vectors: np.ndarray, dimension: int, settings: IndexSettings) -> DenseIndex:
        """A new index over ``vectors`` (rows are unit-norm float32)."""
        vectors = _as_matrix(vectors, dimension)
        if len(vectors) >= settings.hnsw_threshold:
            index: Any = faiss.IndexHNSWFlat(dimension, settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = settings.ef_construction
        else:
            index = faiss.IndexFlatIP(dimension)
        if len(vectors):
            index.add(vectors)
        return cls(index, settings)

    @classmethod
    def load(cls, path: Path, settings: IndexSettings) -> DenseIndex:
        return cls(faiss.read_index(str(path)), settings)

    def save(self, path: Path) -> None:
        faiss.write_index(self._cpu, str(path))

    @property
    def dimension(self) -> int:
        return int(self._cpu.d)

    @property
    def size(self) -> int:
        return int(self._cpu.ntotal)

    def vectors(self) -> np.ndarray:
        """All stored vectors, row order preserved (a copy)."""
        if self.size == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return np.asarray(self._cpu.reconstruct_n(0, self.size), dtype=np.float32)

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """Stored vectors of the given rows."""
        if len(rows) == 0:
            return np.zeros((0, self.dimension), dtype=np.float32)
        keys = np.ascontiguousarray(rows, dtype=np.int64)
        return np.asarray(self._cpu.reconstruct_batch(keys), dtype=np.float32)

    def updated(self, keep: np.ndarray | None, added: np.ndarray) -> DenseIndex:
        """A new index: the rows selected by ``keep`` (None = all) followed by ``added``.

        Appending to an HNSW graph clones it and inserts only the new vectors; any
        removal, or crossing the HNSW threshold, rebuilds from the kept vectors.
        """
        added = _as_matrix(added, self.dimension)
        if keep is None and self.kind == HNSW:
            clone = faiss.clone_index(self._cpu)
            if len(added):
                clone.add(added)
            return DenseIndex(clone, self.settings)
        kept = self.vectors() if keep is None else self.vectors()[keep]
        return DenseIndex.build(np.concatenate([kept, added]), self.dimension, self.settings)

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, rows) for one unit-norm query vector, best first."""
        if self.size == 0 or k <= 0:
            return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
        matrix = _as_matrix(query.reshape(1, -1), self.dimension)
        k = min(k, self.size)
        if self._gpu is not None:
            with self._gpu_lock:
                scores, rows = self._gpu.search(matrix, k)
        else:
            scores, rows = self._cpu.search(matrix, k)
        valid = rows[0] >= 0
        return scores[0][valid], rows[0][valid].astype(np.int64)


def _as_matrix(vectors: np.ndarray, dimension: int) -> np.ndarray:
    return np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, dimension)
