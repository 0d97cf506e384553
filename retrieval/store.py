"""``CollectionStore``: the one object the gateway builds at start-up and shares."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import faiss
import numpy as np

from retrieval.chunking import Chunker
from retrieval.collection import CollectionDirectory, Snapshot, validate_name
from retrieval.config import RetrievalConfig
from retrieval.embedding import Embedder, chunk_tokenizer_of
from retrieval.errors import (
    CollectionNotFoundError,
    DocumentNotFoundError,
    EmbedderMismatchError,
    IndexCorruptError,
    InvalidCollectionNameError,
)
from retrieval.index import IndexSettings
from retrieval.ingest import (
    DocumentPreparer,
    OnError,
    SourceDocument,
    embed_chunks,
    expand_paths,
    prepare_inputs,
)
from retrieval.page_rerank import page_rerank_for
from retrieval.pdf_text import PdfLimits
from retrieval.records import (
    CollectionInfo,
    DocumentInfo,
    IngestResult,
    SearchHit,
    SearchMode,
)
from retrieval.search import search_snapshots

IngestInput = SourceDocument | str | os.PathLike[str]


class CollectionStore:
    """All collections under one root directory, with ingest, delete, list and search.

    Concurrency rule (build one store per process and share it between threads):

    * Searches and listings never wait for writers. A collection's loaded state is an
      immutable :class:`~retrieval.collection.Snapshot`; a search takes the current
      one and keeps using it while an ingest prepares the next. The new snapshot
      replaces the old with one reference assignment, after its version is durable on
      disk, so a search sees either the old or the new collection, never a mix.
    * Writers (ingest, delete) of one collection run one at a time: a per-collection
      thread lock in this process and an ``flock`` on ``<root>/.locks/<name>.lock``
      across processes. Writers of different collections run in parallel.
    * A writer starts from the latest committed version on disk, so commits made by
      other processes are never lost; readers pick them up on their next call (the
      version pointer is checked on every access, a few microseconds).
    * A writer that fails or is killed leaves the previous version in place: nothing
      of a rejected or interrupted ingest is ever visible.

    Building a store sets FAISS's process-wide OpenMP thread count from
    ``RetrievalConfig.faiss_threads`` (default 1, see there).
    """

    def __init__(
        self, root: str | Path, embedder: Embedder, config: RetrievalConfig | None = None
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.config = config or RetrievalConfig()
        self.index_settings = IndexSettings(
            hnsw_threshold=self.config.hnsw_threshold,
            hnsw_m=self.config.hnsw_m,
            ef_construction=self.config.hnsw_ef_construction,
            ef_search=self.config.hnsw_ef_search,
            use_gpu=self.config.use_gpu,
        )
        if self.config.faiss_threads is not None:
            faiss.omp_set_num_threads(self.config.faiss_threads)
        tokenizer = chunk_tokenizer_of(embedder) if self.config.chunk_in_embedder_tokens else None
        chunker = Chunker(self.config.chunk_tokens, self.config.chunk_overlap, tokenizer)
        pdf_limits = PdfLimits(
            max_pages=self.config.pdf_max_pages,
            max_content_bytes=self.config.pdf_max_content_bytes,
            max_inflation=self.config.pdf_max_inflation,
        )
        self.preparer = DocumentPreparer(
            chunker, self.config.max_file_bytes, pdf_limits, self.config.language
        )
        self._state_lock = threading.Lock()
        self._snapshots: dict[str, tuple[object, Snapshot]] = {}
        self._writer_locks: dict[str, threading.Lock] = {}

    # --- reading --------------------------------------------------------------------

    def list_collections(self) -> list[CollectionInfo]:
        """Every committed collection, by name, with document and chunk counts."""
        infos = []
        for entry in sorted(self.root.iterdir()):
            if entry.name.startswith(".") or not (entry / "CURRENT").is_file():
                continue
            with contextlib.suppress(
                CollectionNotFoundError, IndexCorruptError, InvalidCollectionNameError
            ):
                manifest = self._directory(entry.name).read_manifest()
                infos.append(
                    CollectionInfo(
                        name=entry.name,
                        document_count=int(manifest["document_count"]),
                        chunk_count=int(manifest["chunk_count"]),
                        embedder=str(manifest["embedder"]),
                        index_kind=str(manifest["index_kind"]),
                        version=int(manifest["version"]),
                    )
                )
        return infos

    def list_documents(self, collection: str) -> list[DocumentInfo]:
        """The collection's documents in ingest order, each with its chunk count."""
        directory = self._existing(collection)
        with self._state_lock:
            cached = self._snapshots.get(collection)
        if cached is not None and cached[0] == directory.pointer_stamp():
            return list(cached[1].documents.values())
        return directory.read_documents()

    def snapshot(self, collection: str) -> Snapshot:
        """The collection's current immutable state (loaded once, then cached)."""
        directory = self._existing(collection)
        for attempt in range(3):
            stamp = directory.pointer_stamp()
            if stamp is None:
                raise CollectionNotFoundError(f"collection {collection!r} does not exist")
            with self._state_lock:
                cached = self._snapshots.get(collection)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            try:
                snapshot = directory.load(self.index_settings)
            except IndexCorruptError:
                # Another process may have committed twice while we loaded: retry.
                if attempt == 2 or directory.pointer_stamp() == stamp:
                    raise
                continue
            self._remember(collection, stamp, snapshot)
            return snapshot
        raise AssertionError("unreachable")

    def search(
        self,
        collections: str | Sequence[str],
        query: str,
        *,
        k: int = 5,
        mode: SearchMode = "hybrid",
        language: str | None = None,
    ) -> list[SearchHit]:
        """The ``k`` best chunks for ``query`` in one or several collections.

        ``dense`` ranks by cosine similarity, ``bm25`` by keyword score, ``hybrid``
        fuses both rankings (of every collection) by reciprocal rank fusion; the hit's
        ``score`` is that mode's score. ``language`` is the query's language for BM25
        (default: ``RetrievalConfig.query_language``, ``auto`` = detected). With
        ``RetrievalConfig.passage_tokens`` set, a hit is a passage: its chunk plus the
        adjacent chunks of its section (``chunk_id`` and ``score`` are its best chunk's,
        ``text``/``start``/``end`` the whole run's; ``retrieval/expand.py``).
        """
        if language is None and self.config.query_language != "auto":
            language = self.config.query_language
        names = [collections] if isinstance(collections, str) else list(collections)
        snapshots = [self.snapshot(name) for name in names]

        def query_vector() -> np.ndarray:
            for snapshot in snapshots:
                self._check_embedder(snapshot)
            return self.embedder.embed_query(query)

        return search_snapshots(
            snapshots,
            query,
            query_vector,
            k=k,
            mode=mode,
            rrf_k=self.config.rrf_k,
            hybrid_candidates=self.config.hybrid_candidates,
            language=language,
            passage_tokens=self.config.passage_tokens,
            cross_language_bm25_weight=self.config.cross_language_bm25_weight,
            cross_language_passage_tokens=self.config.cross_language_passage_tokens,
            page_rerank=page_rerank_for(
                self.embedder, self.config.page_rerank_chunks, self.config.page_rerank_weight
            ),
        )

    # --- writing --------------------------------------------------------------------

    def create_collection(self, collection: str) -> CollectionInfo:
        """Create an empty collection (a no-op if it exists)."""
        directory = self._directory(collection)
        with self._writing(collection, directory):
            if not directory.exists():
                empty = np.zeros((0, self.embedder.dimension), dtype=np.float32)
                self._commit(
                    collection, directory, self._empty(collection).updated(set(), [], [], empty)
                )
        return next(c for c in self.list_collections() if c.name == collection)

    def delete_collection(self, collection: str) -> None:
        """Remove the collection and all its versions."""
        directory = self._existing(collection)
        with self._writing(collection, directory):
            directory.remove()
            with self._state_lock:
                self._snapshots.pop(collection, None)

    def delete_document(self, collection: str, document_id: str) -> None:
        """Remove one document and its chunks (a new version without them)."""
        directory = self._existing(collection)
        with self._writing(collection, directory):
            base = self.snapshot(collection)
            if document_id not in base.documents:
                raise DocumentNotFoundError(
                    f"document {document_id!r} is not in collection {collection!r}"
                )
            empty = np.zeros((0, base.dimension), dtype=np.float32)
            self._commit(collection, directory, base.updated({document_id}, [], [], empty))

    def ingest_bytes(
        self,
        collection: str,
        data: bytes,
        *,
        name: str,
        source: str | None = None,
        title: str | None = None,
        document_id: str | None = None,
        media_type: str | None = None,
    ) -> IngestResult:
        """Ingest an uploaded payload; ``name`` (a file name) decides the type unless
        ``media_type`` is given, ``source`` defaults to ``name``."""
        document = SourceDocument(data, source or name, name, media_type, title, document_id)
        return self.ingest(collection, [document])[0]

    def ingest(
        self,
        collection: str,
        inputs: Iterable[IngestInput],
        *,
        on_error: OnError = "raise",
        progress: bool = False,
    ) -> list[IngestResult]:
        """Ingest paths (directories are expanded), URLs or :class:`SourceDocument` s as
        one new collection version, and return one result per input.

        Unchanged documents (same bytes, same settings) are skipped; changed ones
        replace their old chunks. ``on_error="raise"`` stops at the first rejected
        input and writes nothing; ``"skip"`` reports it as ``REJECTED`` and ingests
        the rest. ``progress`` shows tqdm bars for reading and embedding.
        """
        directory = self._directory(collection)
        items: list[SourceDocument | str] = []
        for item in inputs:
            if isinstance(item, SourceDocument):
                items.append(item)
            else:
                items.extend(expand_paths([item]))
        with self._writing(collection, directory):
            base = self._empty(collection) if not directory.exists() else self.snapshot(collection)
            self._check_embedder(base)
            results, prepared = prepare_inputs(
                self.preparer, base, items, on_error=on_error, progress=progress
            )
            if prepared:
                chunks = [c for p in prepared for c in p.chunks]
                vectors = embed_chunks(
                    self.embedder,
                    base,
                    prepared,
                    batch_size=self.config.embed_batch_size,
                    progress=progress,
                )
                replaced = {p.info.document_id for p in prepared} & base.documents.keys()
                documents = [p.info for p in prepared]
                self._commit(
                    collection, directory, base.updated(replaced, documents, chunks, vectors)
                )
        return results

    # --- internals ------------------------------------------------------------------

    def _commit(self, collection: str, directory: CollectionDirectory, snapshot: Snapshot) -> None:
        directory.commit(snapshot, self.config.keep_versions)
        self._remember(collection, directory.pointer_stamp(), snapshot)

    def _remember(self, collection: str, stamp: object, snapshot: Snapshot) -> None:
        # ``stamp`` was read before ``snapshot`` was loaded, so a racing reader can at
        # worst store an outdated stamp, which only causes one extra reload.
        with self._state_lock:
            self._snapshots[collection] = (stamp, snapshot)

    def _empty(self, collection: str) -> Snapshot:
        return Snapshot.empty(
            collection, self.embedder.name, self.embedder.dimension, self.index_settings
        )

    def _check_embedder(self, snapshot: Snapshot) -> None:
        if (snapshot.embedder, snapshot.dimension) != (self.embedder.name, self.embedder.dimension):
            raise EmbedderMismatchError(
                f"collection {snapshot.name!r} was built with {snapshot.embedder!r} "
                f"({snapshot.dimension} dims), the store uses {self.embedder.name!r} "
                f"({self.embedder.dimension} dims): delete the collection and ingest its "
                "documents again with this embedder, or configure the one it was built with"
            )

    def _directory(self, collection: str) -> CollectionDirectory:
        validate_name(collection)
        return CollectionDirectory(
            self.root / collection, self.root / ".locks" / f"{collection}.lock"
        )

    def _existing(self, collection: str) -> CollectionDirectory:
        directory = self._directory(collection)
        if not directory.exists():
            raise CollectionNotFoundError(f"collection {collection!r} does not exist")
        return directory

    @contextlib.contextmanager
    def _writing(self, collection: str, directory: CollectionDirectory) -> Iterator[None]:
        with self._state_lock:
            thread_lock = self._writer_locks.setdefault(collection, threading.Lock())
        with thread_lock, directory.lock():
            yield
