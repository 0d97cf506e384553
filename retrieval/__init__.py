"""Retrieval-augmented generation for loragate: ingestion, chunking, embeddings,
FAISS + BM25 hybrid search per collection, and context injection with citations.

The gateway builds one :class:`CollectionStore` at start-up and shares it::

    store = CollectionStore(root, SentenceTransformerEmbedder(), RetrievalConfig())
    store.ingest("manuals", ["docs/"], progress=True)
    hits = store.search("manuals", "how do I reset my password?", k=5)
    context = build_context(hits, max_tokens=1500, count=count_tokens)

This package never imports ``gateway``.
"""

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
)
from retrieval.search import SearchMode
from retrieval.store import CollectionStore
from retrieval.tokens import TokenCounter, count_tokens

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
