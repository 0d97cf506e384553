"""Retrieval-augmented generation for loragate: ingestion, chunking, embeddings,
FAISS + BM25 hybrid search per collection, and context injection with citations.

The gateway builds one :class:`CollectionStore` at start-up and shares it::

    store = CollectionStore(root, SentenceTransformerEmbedder(), RetrievalConfig())
    store.ingest("manuals", ["docs/"], progress=True)
    hits = store.search("manuals", "how do I reset my password?", k=5)
    context = build_context(hits, max_tokens=1500, count=count_tokens)

This package never imports ``gateway``.

Names are imported on first use (PEP 562 ``__getattr__``): the store needs FAISS, token
counting tiktoken, the analyzers PyStemmer, all of them in the ``rag`` extra, and a
gateway with retrieval off imports this package for its types (``SearchHit``,
``SearchMode``, the errors) without them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrieval.config import RetrievalConfig
    from retrieval.context import (
        DEFAULT_CONTEXT_TEMPLATE,
        Citation,
        RetrievedContext,
        build_context,
        truncate_to_tokens,
    )
    from retrieval.embedding import Embedder, SentenceTransformerEmbedder, bundled_model_dir
    from retrieval.errors import (
        BinaryFileError,
        CollectionNotFoundError,
        CorruptDocumentError,
        DocumentNotFoundError,
        DocumentRejectedError,
        EmbedderMismatchError,
        EmptyDocumentError,
        ExtractionLimitError,
        FileTooLargeError,
        IndexCorruptError,
        InvalidCollectionNameError,
        RetrievalError,
        SourceUnavailableError,
        UnsupportedFileTypeError,
    )
    from retrieval.ingest import SourceDocument
    from retrieval.records import (
        Chunk,
        CollectionInfo,
        DocumentInfo,
        IngestResult,
        IngestStatus,
        SearchHit,
        SearchMode,
    )
    from retrieval.store import CollectionStore
    from retrieval.tokens import TokenCounter, count_tokens

_EXPORTS = {
    "RetrievalConfig": "retrieval.config",
    "DEFAULT_CONTEXT_TEMPLATE": "retrieval.context",
    "Citation": "retrieval.context",
    "RetrievedContext": "retrieval.context",
    "build_context": "retrieval.context",
    "truncate_to_tokens": "retrieval.context",
    "Embedder": "retrieval.embedding",
    "SentenceTransformerEmbedder": "retrieval.embedding",
    "bundled_model_dir": "retrieval.embedding",
    "BinaryFileError": "retrieval.errors",
    "CollectionNotFoundError": "retrieval.errors",
    "CorruptDocumentError": "retrieval.errors",
    "DocumentNotFoundError": "retrieval.errors",
    "DocumentRejectedError": "retrieval.errors",
    "EmbedderMismatchError": "retrieval.errors",
    "EmptyDocumentError": "retrieval.errors",
    "ExtractionLimitError": "retrieval.errors",
    "FileTooLargeError": "retrieval.errors",
    "IndexCorruptError": "retrieval.errors",
    "InvalidCollectionNameError": "retrieval.errors",
    "RetrievalError": "retrieval.errors",
    "SourceUnavailableError": "retrieval.errors",
    "UnsupportedFileTypeError": "retrieval.errors",
    "SourceDocument": "retrieval.ingest",
    "Chunk": "retrieval.records",
    "CollectionInfo": "retrieval.records",
    "DocumentInfo": "retrieval.records",
    "IngestResult": "retrieval.records",
    "IngestStatus": "retrieval.records",
    "SearchHit": "retrieval.records",
    "SearchMode": "retrieval.records",
    "CollectionStore": "retrieval.store",
    "TokenCounter": "retrieval.tokens",
    "count_tokens": "retrieval.tokens",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DEFAULT_CONTEXT_TEMPLATE",
    "BinaryFileError",
    "Chunk",
    "Citation",
    "CollectionInfo",
    "CollectionNotFoundError",
    "CollectionStore",
    "CorruptDocumentError",
    "DocumentInfo",
    "DocumentNotFoundError",
    "DocumentRejectedError",
    "Embedder",
    "EmbedderMismatchError",
    "EmptyDocumentError",
    "ExtractionLimitError",
    "FileTooLargeError",
    "IndexCorruptError",
    "IngestResult",
    "IngestStatus",
    "InvalidCollectionNameError",
    "RetrievalConfig",
    "RetrievalError",
    "RetrievedContext",
    "SearchHit",
    "SearchMode",
    "SentenceTransformerEmbedder",
    "SourceDocument",
    "SourceUnavailableError",
    "TokenCounter",
    "UnsupportedFileTypeError",
    "build_context",
    "bundled_model_dir",
    "count_tokens",
    "truncate_to_tokens",
]
