"""Plain data records passed between the retrieval modules and to the gateway."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

from retrieval.errors import DocumentRejectedError

SearchMode = Literal["dense", "bm25", "hybrid"]
"""How a collection is searched: by embedding, by BM25, or both fused."""


def context_line(title: str, heading_path: tuple[str, ...]) -> str:
    """Title and heading path joined with ' > '; a first heading equal to the title is
    not repeated."""
    path = list(heading_path)
    if not path or path[0] != title:
        path.insert(0, title)
    return " > ".join(p for p in path if p)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of one document, sized for the embedder.

    ``start``/``end`` are character offsets into the document's extracted text (for
    Markdown and plain text that is the file's own decoded text; for HTML and PDF it is
    the text the extractor produced). ``token_count`` counts the body in cl100k tokens.
    """

    chunk_id: str
    document_id: str
    title: str
    source: str
    heading_path: tuple[str, ...]
    text: str
    start: int
    end: int
    token_count: int
    language: str = ""
    """The document's language code (``en``, ``fr``...), which BM25 analyses it in;
    empty in collections written before languages were recorded (then detected)."""

    @property
    def context_line(self) -> str:
        """The line placed above the text when embedding and indexing."""
        return context_line(self.title, self.heading_path)

    def embedding_text(self) -> str:
        """What the embedder and BM25 see: the heading context, then the text."""
        return f"{self.context_line}\n\n{self.text}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "chunk_id": self.chunk_id,
            "document_id": self.document_id,
            "title": self.title,
            "source": self.source,
            "heading_path": list(self.heading_path),
            "text": self.text,
            "start": self.start,
            "end": self.end,
            "token_count": self.token_count,
            "language": self.language,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Chunk:
        return cls(
            chunk_id=data["chunk_id"],
            document_id=data["document_id"],
            title=data["title"],
            source=data["source"],
            heading_path=tuple(data["heading_path"]),
            text=data["text"],
            start=int(data["start"]),
            end=int(data["end"]),
            token_count=int(data["token_count"]),
            language=str(data.get("language", "")),
        )


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """One ingested document: identity, provenance and how many chunks it has."""

    document_id: str
    title: str
    source: str
    media_type: str
    content_hash: str
    size_bytes: int
    chunk_count: int
    ingested_at: float
    chunking: str = ""
    """Chunking settings the chunks were made with; a change re-chunks on re-ingest."""
    language: str = ""
    """Language code the document was analysed in (detected or configured)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "document_id": self.document_id,
            "title": self.title,
            "source": self.source,
            "media_type": self.media_type,
            "content_hash": self.content_hash,
            "size_bytes": self.size_bytes,
            "chunk_count": self.chunk_count,
            "ingested_at": self.ingested_at,
            "chunking": self.chunking,
            "language": self.language,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DocumentInfo:
        return cls(
            document_id=data["document_id"],
            title=data["title"],
            source=data["source"],
            media_type=data["media_type"],
            content_hash=data["content_hash"],
            size_bytes=int(data["size_bytes"]),
            chunk_count=int(data["chunk_count"]),
            ingested_at=float(data["ingested_at"]),
            chunking=str(data.get("chunking", "")),
            language=str(data.get("language", "")),
        )


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    """Summary of one collection as listed by the store."""

    name: str
    document_count: int
    chunk_count: int
    embedder: str
    index_kind: str
    version: int


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One ranked chunk. ``score`` depends on the mode: cosine similarity (dense),
    BM25 score (bm25) or reciprocal-rank-fusion score (hybrid); higher is better."""

    chunk_id: str
    document_id: str
    title: str
    source: str
    heading_path: tuple[str, ...]
    text: str
    score: float
    start: int
    end: int
    collection: str = ""

    @classmethod
    def from_chunk(cls, chunk: Chunk, score: float, collection: str = "") -> SearchHit:
        return cls(
            chunk_id=chunk.chunk_id,
            document_id=chunk.document_id,
            title=chunk.title,
            source=chunk.source,
            heading_path=chunk.heading_path,
            text=chunk.text,
            score=float(score),
            start=chunk.start,
            end=chunk.end,
            collection=collection,
        )


class IngestStatus(enum.StrEnum):
    """What happened to one document in an ingest call."""

    ADDED = "added"
    REPLACED = "replaced"
    UNCHANGED = "unchanged"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class IngestResult:
    """Outcome for one input of an ingest call (``error`` is set when rejected)."""

    source: str
    document_id: str
    status: IngestStatus
    chunk_count: int
    error: DocumentRejectedError | None = None
