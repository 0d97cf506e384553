"""Errors of retrieval as clients see them, and the library's errors mapped onto them.

They extend the tree of ``gateway.errors``::

    NotFoundError                   404
    └── CollectionNotFoundError     404 invalid_request_error (code: collection_not_found)
    InvalidRequestError             400
    └── UnprocessableDocumentError  422 invalid_request_error (code: per rejection)
    RetrievalUnavailableError       503 service_unavailable   (code: retrieval_unavailable)

``as_gateway_error`` turns any ``retrieval.RetrievalError`` into one of the gateway's
errors, so one handler renders them all with the OpenAI body.
"""

from __future__ import annotations

import logging

from gateway.errors import (
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
)
from retrieval import errors as lib

logger = logging.getLogger(__name__)


class CollectionNotFoundError(NotFoundError):
    default_code = "collection_not_found"

    def __init__(self, param: str | None = None) -> None:
        # Byte-for-byte the same body whatever the name and whether the collection is
        # missing or only not this tenant's: nothing about other tenants can be learnt.
        super().__init__(
            "The collection does not exist or you do not have access to it.", param=param
        )


class UnprocessableDocumentError(InvalidRequestError):
    """A document was read but cannot be ingested (type, encoding, damage, no text)."""

    status_code = 422


class RetrievalUnavailableError(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "retrieval_unavailable"


_REJECTIONS: dict[type[lib.DocumentRejectedError], str] = {
    lib.UnsupportedFileTypeError: "unsupported_file_type",
    lib.BinaryFileError: "binary_file",
    lib.CorruptDocumentError: "corrupt_document",
    lib.EmptyDocumentError: "empty_document",
    lib.ExtractionLimitError: "extraction_limit",
}


def as_gateway_error(exc: lib.RetrievalError, *, param: str | None = None) -> GatewayError:
    """The client-facing error for a library error (server faults are logged here)."""
    if isinstance(exc, lib.CollectionNotFoundError):
        return CollectionNotFoundError(param)
    if isinstance(exc, lib.FileTooLargeError):
        return PayloadTooLargeError(exc.message, param=param, code="file_too_large")
    if isinstance(exc, lib.SourceUnavailableError):
        return InvalidRequestError(exc.message, param=param, code="source_unavailable")
    for kind, code in _REJECTIONS.items():
        if isinstance(exc, kind):
            return UnprocessableDocumentError(exc.message, param=param, code=code)
    if isinstance(exc, lib.DocumentRejectedError):
        return UnprocessableDocumentError(exc.message, param=param, code="document_rejected")
    if isinstance(exc, lib.InvalidCollectionNameError):
        return InvalidRequestError(exc.message, param=param, code="invalid_collection_name")
    if isinstance(exc, lib.DocumentNotFoundError):
        return NotFoundError("The document does not exist.", param=param, code="document_not_found")
    # EmbedderMismatchError, IndexCorruptError: the server's state, not the request.
    logger.error("retrieval failure: %s: %s", type(exc).__name__, exc.message)
    code = "embedder_mismatch" if isinstance(exc, lib.EmbedderMismatchError) else "index_error"
    return GatewayError("The collection cannot be searched right now.", code=code)
