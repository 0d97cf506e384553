"""Typed errors raised by the retrieval library.

Every error is a :class:`RetrievalError`; the gateway can map the branches to HTTP
statuses with one handler per base class (client mistakes vs. server state)::

    RetrievalError
    ├── DocumentRejectedError        a file/payload was refused; nothing was written
    │   ├── SourceUnavailableError       cannot be read (missing, not a file, I/O error)
    │   ├── UnsupportedFileTypeError     unknown extension or media type
    │   ├── FileTooLargeError            over the configured byte limit
    │   ├── BinaryFileError              declared as text but holds binary data
    │   ├── CorruptDocumentError         cannot be parsed (broken PDF, encrypted PDF, ...)
    │   ├── ExtractionLimitError         would cost more than the configured limits
    │   │                                (a PDF bomb: too many pages, too much content)
    │   └── EmptyDocumentError           no extractable text
    ├── InvalidCollectionNameError   a collection name that is not a safe directory name
    ├── CollectionNotFoundError      no such collection
    ├── DocumentNotFoundError        no such document in the collection
    ├── EmbedderMismatchError        the collection was built with another embedder
    └── IndexCorruptError            a stored index version cannot be read

Rejections carry ``source`` (the path, URL or name that was refused) so a batch
ingest can report which file failed and why.
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class of every error raised by :mod:`retrieval`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DocumentRejectedError(RetrievalError):
    """A document was refused before anything was written to the collection."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class SourceUnavailableError(DocumentRejectedError):
    """The path or URL cannot be read (missing, a directory, permission, I/O error)."""


class UnsupportedFileTypeError(DocumentRejectedError):
    """The file's extension or media type is not one the library can extract."""


class FileTooLargeError(DocumentRejectedError):
    """The file is larger than ``RetrievalConfig.max_file_bytes``."""


class BinaryFileError(DocumentRejectedError):
    """A file declared as text (Markdown, plain text, HTML) contains binary data."""


class CorruptDocumentError(DocumentRejectedError):
    """The file could not be parsed (damaged or encrypted PDF, broken encoding...)."""


class ExtractionLimitError(DocumentRejectedError):
    """Extracting the file would exceed a configured limit: a PDF with more pages than
    ``RetrievalConfig.pdf_max_pages`` or content that decompresses past the PDF
    content budget (a decompression bomb). Small files can be expensive; the byte
    limit alone cannot catch them."""


class EmptyDocumentError(DocumentRejectedError):
    """The file holds no extractable text (empty, whitespace only, scanned PDF)."""


class InvalidCollectionNameError(RetrievalError):
    """A collection name must match ``[A-Za-z0-9][A-Za-z0-9_.-]{0,63}``."""


class CollectionNotFoundError(RetrievalError):
    """The named collection does not exist."""


class DocumentNotFoundError(RetrievalError):
    """The document id is not in the collection."""


class EmbedderMismatchError(RetrievalError):
    """The collection's vectors were made by another embedder (name or dimension)."""


class IndexCorruptError(RetrievalError):
    """A stored collection version is missing files or cannot be decoded."""
