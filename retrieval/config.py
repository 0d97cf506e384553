"""Tuning knobs of the retrieval library, gathered in one frozen record."""

from __future__ import annotations

from dataclasses import dataclass

from retrieval import pdf_text
from retrieval.analysis import check_language


@dataclass(frozen=True, slots=True)
class RetrievalConfig:
    """Settings shared by chunking, indexing, ingestion and search.

    Defaults are sized for all-MiniLM-L6-v2, which reads at most 256 word-pieces:
    a chunk of ``chunk_tokens`` cl100k tokens *including* its heading line stays under
    that limit for nearly all prose and most command-heavy text (see
    ``retrieval/bench/README.md`` for the measurement).
    """

    chunk_tokens: int = 180
    """Largest chunk, heading line included, in the embedder's own tokens when it has a
    tokenizer (capped at what it reads), else in cl100k tokens."""
    chunk_overlap: int = 30
    """Tokens repeated from the end of one chunk at the start of the next (same section)."""
    chunk_in_embedder_tokens: bool = True
    """Size chunks in the embedder's tokens (False: cl100k tokens)."""
    language: str = "auto"
    """Language documents are analysed in for BM25 (stop words, Snowball stemmer):
    ``auto`` detects it per document, or a code (``en fr de es it pt nl``)."""
    query_language: str = "auto"
    """Language of queries for BM25: ``auto`` detects it per query, or a code."""
    max_file_bytes: int = 20 * 1024 * 1024
    """Files larger than this are rejected with ``FileTooLargeError``."""
    pdf_max_pages: int = pdf_text.MAX_PAGES
    """PDFs with more pages are rejected with ``ExtractionLimitError``."""
    pdf_max_content_bytes: int = pdf_text.MAX_CONTENT_BYTES
    """Most decompressed page content (form XObjects counted each time drawn) one PDF
    may make the extractor parse (pypdf parses 0.1-0.4 MB/s on 2 cores: minutes)."""
    pdf_max_inflation: int = pdf_text.MAX_INFLATION
    """PDF content may also decompress to at most this many times the file's size
    (beyond the first MiB): the zip-bomb ratio test. Real PDFs measured 0.6-4x."""
    embed_batch_size: int = 1024
    """Chunks per embedder call (the embedder cuts them into its own batches by length;
    the int8 embedder runs those side by side, and each call ends waiting for its last:
    1,123 manual chunks in calls of 256 embed at 0.90x the speed of calls of 1,024)."""
    hnsw_threshold: int = 50_000
    """Collections with at least this many chunks use HNSW; smaller ones exact search."""
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    use_gpu: bool | None = None
    """Put exact indexes on the GPU: None = when faiss-gpu sees a GPU, False = never."""
    faiss_threads: int | None = 1
    """OpenMP threads for FAISS (process-wide, set when a store is built; None = leave
    FAISS's default). Searches are single-query, so concurrency comes from requests;
    OpenMP fan-out costs more than it saves and collapses when cores are busy (10k
    chunks, 2 busy cores: 16 ms p50 with 2 threads, 0.36 ms with 1)."""
    rrf_k: int = 60
    """Reciprocal rank fusion constant: fused score = sum of 1 / (rrf_k + rank)."""
    hybrid_candidates: int = 50
    """Each ranker contributes this many candidates (at least ``k``) to the fusion."""
    cross_language_bm25_weight: float = 0.5
    """Weight of the BM25 ranking in hybrid fusion for a query in none of the collection's
    document languages (the dense ranking weighs 1): keywords rarely match across
    languages. At 0.5 other-language answer@5 is 0.68 against 0.55 at full weight (SQLite
    manual) and 0.57 against 0.53 (PostgreSQL), English the same (``docs/benchmarks.md``)."""
    page_rerank_chunks: int = 0
    """For a query in another language than the documents (``dual`` embedder, hybrid
    search): the best page's chunks are re-scored with both parts of the query vector
    and this many of them join the fusion (0: off; ``retrieval.page_rerank_chunks``). Off by
    default: 2 add one PostgreSQL question of 60 and lose one SQLite question of 22
    (``retrieval/bench/README.md``)."""
    page_rerank_weight: float = 0.5
    """Weight of that ranking in the fusion (a dense ranking weighs 1)."""
    passage_tokens: int = 300
    """Grow each search hit with the adjacent chunks of its own section up to this many
    cl100k tokens, a lower hit it swallows freeing its slot (0: single chunks). 300
    keeps five sources (~1,100 tokens) inside the gateway's 1,500-token context and gives
    hybrid answer-in-top-5 0.90 against 0.85 with single chunks (English), 0.32 against
    0.25 (fr/de/es) on the PostgreSQL manual, recall@10 the same or higher
    (``retrieval/bench/README.md``)."""
    cross_language_passage_tokens: int = 400
    """Smallest ``passage_tokens`` for a query in none of the collection's document
    languages (when passages are on; a larger ``passage_tokens`` wins). The multilingual
    ranking finds the right page more surely than the chunk of it that answers, and a
    wider passage takes the answer in: other-language answer@5 0.633 against 0.583
    (PostgreSQL manual), 0.773 / 0.727 against 0.682 (SQLite, 35 / 200 pages), the top
    five sources ~1,470 cl100k tokens (inside the gateway's 1,500-token context)
    against ~1,120 (``retrieval/bench/README.md``)."""
    keep_versions: int = 2
    """Committed versions kept on disk per collection (the current one included)."""

    def __post_init__(self) -> None:
        if self.chunk_tokens < 32:
            raise ValueError("chunk_tokens must be at least 32")
        if not 0 <= self.chunk_overlap < self.chunk_tokens // 2:
            raise ValueError("chunk_overlap must be >= 0 and under half of chunk_tokens")
        if self.max_file_bytes <= 0 or self.embed_batch_size <= 0:
            raise ValueError("max_file_bytes and embed_batch_size must be positive")
        if min(self.pdf_max_pages, self.pdf_max_content_bytes, self.pdf_max_inflation) <= 0:
            raise ValueError("the pdf_max_* limits must be positive")
        if self.hnsw_threshold <= 0 or self.hnsw_m < 4:
            raise ValueError("hnsw_threshold must be positive and hnsw_m at least 4")
        check_language(self.language)
        check_language(self.query_language)
        if not 0.0 <= self.cross_language_bm25_weight <= 1.0:
            raise ValueError("cross_language_bm25_weight must be between 0 and 1")
        if self.page_rerank_chunks < 0 or not 0.0 < self.page_rerank_weight <= 1.0:
            raise ValueError("page_rerank_chunks must be >= 0 and page_rerank_weight in (0, 1]")
        if self.passage_tokens < 0 or self.cross_language_passage_tokens < 0:
            raise ValueError("passage_tokens must be >= 0 (0: single chunks)")
        if self.keep_versions < 2:
            raise ValueError("keep_versions must be at least 2 (current + previous)")
