"""Whether retrieval can run here: the ``rag`` extra (FAISS, the embedders, tiktoken,
PyStemmer) is optional, and a gateway installed without it serves everything else."""

from __future__ import annotations

from gateway.extras import RAG, MissingExtraError, require
from gateway.rag.errors import RetrievalUnavailableError


def require_rag_extra() -> None:
    """Raise ``RetrievalUnavailableError`` (503) naming the ``rag`` extra when it is not
    installed; callers check before importing the retrieval store."""
    try:
        require(RAG)
    except MissingExtraError as exc:
        raise RetrievalUnavailableError(str(exc)) from exc
