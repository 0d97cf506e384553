"""Reading inputs, turning them into chunked documents and embedding the chunks.

Nothing here writes to a collection: all of it runs before the store commits a new
version, so a rejected input or a failure can never leave half a document behind."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

import numpy as np
from tqdm import tqdm

from retrieval.analysis import check_language, detect_language
from retrieval.chunking import Chunker
from retrieval.collection import Snapshot
from retrieval.embedding import Embedder
from retrieval.errors import (
    DocumentRejectedError,
    EmbedderMismatchError,
    EmptyDocumentError,
    FileTooLargeError,
    SourceUnavailableError,
)
from retrieval.extraction import EXTENSIONS, media_type_for
from retrieval.extraction import extract as extract  # ingest_profile wraps ingest.extract
from retrieval.pdf_text import PdfLimits
from retrieval.records import Chunk, DocumentInfo, IngestResult, IngestStatus

OnError = Literal["raise", "skip"]

EXTRACTOR_VERSION = 3
"""Bump when extraction changes, so unchanged files are re-chunked on re-ingest.
2: HTML drops hidden elements and is tokenized in linear time.
3: chunks record their document's language."""


@dataclass(frozen=True, slots=True)
class SourceDocument:
    """One input to ingest: its bytes and where they came from.

    ``source`` (a path or URL) is what citations show and, unless ``document_id`` is
    given, what identifies the document: ingesting the same source again replaces it.
    ``name`` decides the file type by extension unless ``media_type`` is given.
    """

    data: bytes
    source: str
    name: str
    media_type: str | None = None
    title: str | None = None
    document_id: str | None = None

    @property
    def identity(self) -> str:
        return self.document_id or document_id_for(self.source)


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    """A document ready to embed: its record and its chunks."""

    info: DocumentInfo
    chunks: list[Chunk]


def document_id_for(source: str) -> str:
    """Stable id of a source path or URL (16 hex digits of its sha256)."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()[:16]


def content_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_source(
    location: str | os.PathLike[str],
    *,
    max_bytes: int,
    source: str | None = None,
    title: str | None = None,
    document_id: str | None = None,
    media_type: str | None = None,
) -> SourceDocument:
    """Read a local path, or a URL through fsspec (``file://``, ``s3://``, ... as
    installed), refusing it before reading when it is over ``max_bytes``."""
    text = os.fspath(location)
    if "://" in text:
        data, name = _read_url(text, max_bytes)
        origin = text
    else:
        path = Path(text).expanduser().resolve()
        origin, name = str(path), path.name
        try:
            if not path.is_file():
                raise SourceUnavailableError(origin, "no such file")
            size = path.stat().st_size
            if size > max_bytes:
                raise FileTooLargeError(origin, f"{size} bytes is over the {max_bytes} limit")
            data = path.read_bytes()
        except OSError as exc:
            raise SourceUnavailableError(origin, f"cannot read ({exc.strerror or exc})") from exc
    if len(data) > max_bytes:  # the file grew between stat and read
        raise FileTooLargeError(origin, f"{len(data)} bytes is over the {max_bytes} limit")
    return SourceDocument(data, source or origin, name, media_type, title, document_id)


def _read_url(url: str, max_bytes: int) -> tuple[bytes, str]:
    import fsspec

    try:
        filesystem, path = fsspec.core.url_to_fs(url)
        size = filesystem.size(path)
        if size is not None and size > max_bytes:
            raise FileTooLargeError(url, f"{size} bytes is over the {max_bytes} limit")
        with filesystem.open(path, "rb") as handle:
            data = handle.read(max_bytes + 1)
    except (OSError, ValueError, ImportError) as exc:
        raise SourceUnavailableError(url, f"cannot read ({exc})") from exc
    if len(data) > max_bytes:
        raise FileTooLargeError(url, f"over the {max_bytes} byte limit")
    return data, PurePosixPath(path).name


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[str]:
    """Files as given; directories replaced by their supported files, sorted, recursively
    (hidden entries skipped). Unsupported files inside directories are skipped, while
    an unsupported file named explicitly is kept so that ingest rejects it."""
    for item in paths:
        text = os.fspath(item)
        path = Path(text)
        if "://" not in text and path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for file in sorted(files):
                    if not file.startswith(".") and Path(file).suffix.lower() in EXTENSIONS:
                        yield str(Path(root) / file)
        else:
            yield text


class DocumentPreparer:
    """Validates, extracts and chunks one :class:`SourceDocument` (thread-safe)."""

    def __init__(
        self,
        chunker: Chunker,
        max_file_bytes: int,
        pdf_limits: PdfLimits | None = None,
        language: str = "auto",
    ) -> None:
        self.chunker = chunker
        self.max_file_bytes = max_file_bytes
        self.pdf_limits = pdf_limits or PdfLimits()
        self.language = check_language(language)
        self.chunking = (
            f"{chunker.tokenizer.name}/{chunker.chunk_tokens}/{chunker.overlap}"
            f"/x{EXTRACTOR_VERSION}/{self.language}"
        )

    def is_unchanged(self, item: SourceDocument, existing: DocumentInfo | None) -> bool:
        """True when ``existing`` was made from the same bytes with the same settings."""
        return (
            existing is not None
            and existing.content_hash == content_hash(item.data)
            and existing.chunking == self.chunking
            and existing.source == item.source
            and (item.title is None or item.title == existing.title)
        )

    def prepare(self, item: SourceDocument) -> PreparedDocument:
        """Extract and chunk; raise a ``DocumentRejectedError`` subclass on bad input."""
        if len(item.data) > self.max_file_bytes:
            raise FileTooLargeError(
                item.source, f"{len(item.data)} bytes is over the {self.max_file_bytes} limit"
            )
        media_type = media_type_for(item.name, item.media_type, item.source)
        digest = content_hash(item.data)
        fallback_title = PurePosixPath(item.name).stem or item.source
        document = extract(
            item.data, media_type, item.source, fallback_title, pdf_limits=self.pdf_limits
        )
        if item.title:
            document = dataclasses.replace(document, title=item.title)
        document_id = item.identity
        language = self.language
        if language == "auto":
            language = detect_language(document.text)
        chunks = self.chunker.chunk(
            document,
            document_id=document_id,
            source=item.source,
            content_hash=digest,
            language=language,
        )
        if not chunks:
            raise EmptyDocumentError(item.source, "no extractable text")
        info = DocumentInfo(
            document_id=document_id,
            title=document.title,
            source=item.source,
            media_type=media_type,
            content_hash=digest,
            size_bytes=len(item.data),
            chunk_count=len(chunks),
            ingested_at=time.time(),
            chunking=self.chunking,
            language=language,
        )
        return PreparedDocument(info, chunks)


def prepare_inputs(
    preparer: DocumentPreparer,
    base: Snapshot,
    items: list[SourceDocument | str],
    *,
    on_error: OnError,
    progress: bool,
) -> tuple[list[IngestResult], list[PreparedDocument]]:
    """Read, validate, extract and chunk every input that differs from ``base``.

    Returns one result per input and the documents to add; with ``on_error="raise"``
    the first rejection propagates. A source given twice: the last copy wins.
    """
    results: list[IngestResult] = []
    prepared: dict[str, PreparedDocument] = {}
    for item in tqdm(items, desc="Reading", unit="file", disable=not progress):
        try:
            document = (
                item
                if isinstance(item, SourceDocument)
                else read_source(item, max_bytes=preparer.max_file_bytes)
            )
            existing = base.documents.get(document.identity)
            if existing is not None and preparer.is_unchanged(document, existing):
                status, count = IngestStatus.UNCHANGED, existing.chunk_count
            else:
                ready = preparer.prepare(document)
                prepared[document.identity] = ready
                status = IngestStatus.REPLACED if existing else IngestStatus.ADDED
                count = ready.info.chunk_count
        except DocumentRejectedError as error:
            if on_error == "raise":
                raise
            identity = item.identity if isinstance(item, SourceDocument) else ""
            results.append(
                IngestResult(
                    error.source,
                    identity or document_id_for(error.source),
                    IngestStatus.REJECTED,
                    0,
                    error,
                )
            )
            continue
        results.append(IngestResult(document.source, document.identity, status, count))
    return results, list(prepared.values())


def embed_chunks(
    embedder: Embedder,
    base: Snapshot,
    prepared: list[PreparedDocument],
    *,
    batch_size: int,
    progress: bool,
) -> np.ndarray:
    """Vectors for the new chunks, in order; a chunk whose text is unchanged from the
    document's previous version reuses its stored vector instead of being re-embedded.
    The embedder is called with ``batch_size`` texts at a time, sorted by length."""
    texts = [c.embedding_text() for p in prepared for c in p.chunks]
    old_rows = {
        base.chunks[row].embedding_text(): row
        for p in prepared
        for row in base.rows_by_document.get(p.info.document_id, [])
    }
    vectors = np.zeros((len(texts), embedder.dimension), dtype=np.float32)
    reused = [i for i, text in enumerate(texts) if text in old_rows]
    if reused:
        vectors[reused] = base.dense.rows(np.array([old_rows[texts[i]] for i in reused]))
    # Longest first, so each call gets texts of similar length: a batch is padded to its
    # longest text, and in document order most of a batch would be padding. Vectors are
    # written back by index, so the order of the result does not change.
    missing = sorted(
        (i for i, text in enumerate(texts) if text not in old_rows), key=lambda i: -len(texts[i])
    )
    with tqdm(total=len(missing), desc="Embedding", unit="chunk", disable=not progress) as bar:
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            embedded = embedder.embed_documents([texts[i] for i in batch])
            if embedded.shape != (len(batch), embedder.dimension):
                raise EmbedderMismatchError(
                    f"embedder {embedder.name!r} returned shape {embedded.shape}, "
                    f"expected ({len(batch)}, {embedder.dimension})"
                )
            vectors[batch] = embedded
            bar.update(len(batch))
    return vectors
