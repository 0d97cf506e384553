"""``StoreProvider``: the one ``CollectionStore`` of a gateway, built off the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.rag.errors import RetrievalUnavailableError
from gateway.rag.extra import require_rag_extra
from gateway.settings import MIB, RetrievalSettings, Settings
from retrieval import RetrievalConfig
from retrieval.dual_embedding import DUAL_MODEL_NAME
from retrieval.embedding import BUNDLED_MODEL_NAME
from retrieval.use_embedding import USE_MODEL_NAME

if TYPE_CHECKING:
    from retrieval import CollectionStore, Embedder

logger = logging.getLogger(__name__)

StoreFactory = Callable[[], "CollectionStore"]

BUNDLED_NAMES = {
    "minilm": BUNDLED_MODEL_NAME,
    "minilm-int8": f"{BUNDLED_MODEL_NAME}-int8",
    "use-multilingual": USE_MODEL_NAME,
    "dual": DUAL_MODEL_NAME,
}
"""What each bundled embedder calls itself (``Embedder.name``), known before it loads."""


def library_config(settings: RetrievalSettings) -> RetrievalConfig:
    return RetrievalConfig(
        chunk_tokens=settings.chunk_tokens,
        chunk_overlap=settings.chunk_overlap,
        passage_tokens=settings.passage_tokens,
        cross_language_passage_tokens=settings.cross_language_passage_tokens,
        page_rerank_chunks=settings.page_rerank_chunks,
        max_file_bytes=settings.max_file_mib * MIB,
        hnsw_threshold=settings.hnsw_threshold,
        language=settings.language,
        query_language=settings.query_language,
    )


def build_embedder(settings: RetrievalSettings) -> Embedder:
    """The configured model (local files; seconds, ~10 s more for a first int8 graph)."""
    require_rag_extra()
    from retrieval import SentenceTransformerEmbedder
    from retrieval.embedding import embedder_from_name

    if settings.embedder_dir is None and settings.embedder != "minilm":
        return embedder_from_name(settings.embedder)
    return SentenceTransformerEmbedder(
        settings.embedder_dir,
        name=settings.embedder_name,
        device=settings.embedder_device,
        query_prefix=settings.query_prefix,
        document_prefix=settings.document_prefix,
    )


def open_store(
    root: Path, settings: RetrievalSettings, embedder: Embedder | None = None
) -> CollectionStore:
    """The collections under ``root`` (blocking: loads the embedder unless given one).
    Collections another embedder built are logged (:func:`other_embedder_warnings`)."""
    require_rag_extra()
    from retrieval import CollectionStore

    store = CollectionStore(
        root,
        embedder if embedder is not None else build_embedder(settings),
        library_config(settings),
    )
    for warning in other_embedder_warnings(store):
        logger.warning("%s", warning)
    return store


def other_embedder_warnings(store: CollectionStore) -> list[str]:
    """One line per collection built with another embedder than ``store``'s: its
    searches fail (``embedder_mismatch``) until it is ingested again, or until the
    embedder that built it is configured (named when it is a bundled one)."""
    settings_for = {name: setting for setting, name in BUNDLED_NAMES.items()}
    lines = []
    for info in store.list_collections():
        if info.embedder == store.embedder.name:
            continue
        setting = settings_for.get(info.embedder)
        keep = f"; retrieval.embedder: {setting} serves it as built" if setting else ""
        lines.append(
            f"collection {info.name!r} was built with {info.embedder!r} and the configured "
            f"embedder is {store.embedder.name!r}: its searches fail (embedder_mismatch) "
            f"until its documents are ingested again into a new or emptied collection{keep}"
        )
    return lines


def should_preload(settings: Settings) -> bool:
    """``retrieval.preload``, or (unset) whether some tenant has collections."""
    if settings.retrieval.preload is not None:
        return settings.retrieval.preload
    return any(tenant.collections for tenant in settings.tenants.values())


def pin_faiss_threads(config: RetrievalConfig) -> None:
    """Thread initializer: FAISS's OpenMP thread count is per calling thread, so each
    worker that searches sets it (the store sets it only in the thread that built it)."""
    if config.faiss_threads is not None:
        import faiss

        faiss.omp_set_num_threads(config.faiss_threads)


class StoreProvider:
    """Builds the shared ``CollectionStore`` once: at start-up or on first use.

    Concurrency rule: ``start`` and ``get`` are called on the event loop. The build
    runs in a worker thread (it loads the embedding model); every caller awaits the
    same build. A failed build is forgotten, so the next call tries again, and callers
    get a 503 meanwhile.
    """

    def __init__(self, factory: StoreFactory) -> None:
        self._factory = factory
        self._build: asyncio.Future[CollectionStore] | None = None

    def start(self) -> asyncio.Future[CollectionStore]:
        """Begin the build now (a no-op when it is under way or done)."""
        if self._build is None:
            self._build = asyncio.get_running_loop().run_in_executor(None, self._factory)
        return self._build

    @property
    def ready(self) -> bool:
        build = self._build
        return (
            build is not None
            and build.done()
            and not build.cancelled()
            and build.exception() is None
        )

    async def get(self) -> CollectionStore:
        build = self.start()
        try:
            return await asyncio.shield(build)
        except Exception as exc:
            if self._build is build:
                self._build = None
            logger.error("retrieval store could not be built: %s", exc)
            raise RetrievalUnavailableError(
                "Retrieval is not available on this server right now."
            ) from exc
