"""Request and response models of ``/v1/retrieval/search`` and ``/admin/collections``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from gateway.protocol.chat import SearchModeName
from gateway.protocol.common import AdminRequest, ErrorInfo, OpenAIModel
from gateway.protocol.sse import error_body
from gateway.rag.errors import as_gateway_error
from retrieval import CollectionInfo, DocumentInfo, IngestResult, SearchHit


class SearchRequest(OpenAIModel):
    """Search collections directly (to debug what a chat request would retrieve)."""

    collection: str | list[str] = Field(description="A collection, or several (at most 8).")
    query: str = Field(min_length=1, max_length=16_384)
    top_k: int | None = Field(default=None, ge=1, description="Default: retrieval.top_k.")
    mode: SearchModeName | None = Field(default=None, description="Default: retrieval.mode.")

    def names(self) -> list[str]:
        return [self.collection] if isinstance(self.collection, str) else list(self.collection)


class SearchResult(BaseModel):
    object: Literal["retrieval.chunk"] = "retrieval.chunk"
    rank: int = Field(description="1 for the best chunk.")
    score: float = Field(description="The mode's score: cosine, BM25 or fused; higher is better.")
    chunk_id: str
    document_id: str
    collection: str
    title: str
    source: str
    heading_path: list[str]
    text: str
    start: int = Field(description="Character offset of the chunk in the document's text.")
    end: int

    @classmethod
    def build(cls, rank: int, hit: SearchHit) -> SearchResult:
        return cls(
            rank=rank,
            score=hit.score,
            chunk_id=hit.chunk_id,
            document_id=hit.document_id,
            collection=hit.collection,
            title=hit.title,
            source=hit.source,
            heading_path=list(hit.heading_path),
            text=hit.text,
            start=hit.start,
            end=hit.end,
        )


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    query: str
    mode: SearchModeName
    data: list[SearchResult]


# --- admin ------------------------------------------------------------------------------


class IngestPathRequest(AdminRequest):
    """JSON ingestion: a file or folder on the gateway's machine."""

    path: str = Field(description="A file or folder under one of retrieval.allowed_roots.")
    skip_errors: bool = Field(
        default=False,
        description="false: the first rejected file stops the ingest and nothing is written; "
        "true: rejected files are reported and the others ingested.",
    )


class IngestedDocument(BaseModel):
    object: Literal["collection.ingest_result"] = "collection.ingest_result"
    source: str
    document_id: str
    status: Literal["added", "replaced", "unchanged", "rejected"]
    chunk_count: int
    error: ErrorInfo | None = None

    @classmethod
    def build(cls, result: IngestResult) -> IngestedDocument:
        error = error_body(as_gateway_error(result.error)).error if result.error else None
        return cls(
            source=result.source,
            document_id=result.document_id,
            status=result.status.value,
            chunk_count=result.chunk_count,
            error=error,
        )


class IngestResponse(BaseModel):
    object: Literal["list"] = "list"
    collection: str
    data: list[IngestedDocument]


class CollectionCard(BaseModel):
    object: Literal["collection"] = "collection"
    name: str
    document_count: int
    chunk_count: int
    embedder: str
    index_kind: str = Field(description="flat (exact) or hnsw.")
    version: int = Field(description="Committed version; every write makes a new one.")

    @classmethod
    def build(cls, info: CollectionInfo) -> CollectionCard:
        return cls(
            name=info.name,
            document_count=info.document_count,
            chunk_count=info.chunk_count,
            embedder=info.embedder,
            index_kind=info.index_kind,
            version=info.version,
        )


class CollectionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[CollectionCard]


class DocumentCard(BaseModel):
    object: Literal["collection.document"] = "collection.document"
    document_id: str
    title: str
    source: str
    media_type: str
    content_hash: str
    size_bytes: int
    chunk_count: int
    ingested_at: float

    @classmethod
    def build(cls, info: DocumentInfo) -> DocumentCard:
        return cls(
            document_id=info.document_id,
            title=info.title,
            source=info.source,
            media_type=info.media_type,
            content_hash=info.content_hash,
            size_bytes=info.size_bytes,
            chunk_count=info.chunk_count,
            ingested_at=info.ingested_at,
        )


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    collection: str
    data: list[DocumentCard]


class Deleted(BaseModel):
    id: str
    object: Literal["collection", "collection.document"]
    deleted: bool = True
