"""``/admin/collections``: ingest documents (upload or path), list, delete.

Every route needs the admin key (router dependency, checked before any body is read).
Ingestion takes a multipart upload (one or more ``file`` parts, the type decided by
each file name's extension, and an optional ``skip_errors`` field) or JSON ``{"path":
...}`` naming a file or folder under ``retrieval.allowed_roots``. Uploads are exempt
from the app-wide body limit and apply ``retrieval.max_upload_mib`` (and must declare
their Content-Length); each document is also held to ``retrieval.max_file_mib``.

Nothing here touches the disk or parses a document on the event loop: resolving and
walking a path runs in a worker thread, and reading, hashing, extracting and embedding
run on the retrieval service's writer thread, so ``/health`` and chat keep answering
while a large or hostile document is ingested.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from starlette.datastructures import UploadFile

from gateway.admin.request_body import declared_length, read_json_body
from gateway.api.deps import RetrievalDep, SettingsDep, require_admin
from gateway.api.json_body import validated
from gateway.errors import InvalidRequestError
from gateway.protocol.common import AdminRequest
from gateway.rag.extra import require_rag_extra
from gateway.rag.protocol import (
    CollectionCard,
    CollectionList,
    Deleted,
    DocumentCard,
    DocumentList,
    IngestedDocument,
    IngestPathRequest,
    IngestResponse,
)
from gateway.settings import MIB, Settings

if TYPE_CHECKING:
    from retrieval import SourceDocument

PREFIX = "/admin/collections"
DOCUMENTS_PATH = r"/admin/collections/[^/]+/documents"
"""Upload route, as a pattern for the body-limit middleware."""
MAX_FILES_PER_UPLOAD = 256

router = APIRouter(prefix=PREFIX, tags=["admin"], dependencies=[Depends(require_admin)])


class UploadFields(AdminRequest):
    skip_errors: bool = False


def _path_not_allowed(message: str) -> InvalidRequestError:
    return InvalidRequestError(message, param="path", code="path_not_allowed")


def allowed_files(path: str, roots: list[Path]) -> list[str]:
    """The files ``path`` names (a folder: its supported files), each resolved and
    checked to lie under one of ``roots`` (so a symlink cannot lead outside)."""
    if not roots:
        raise _path_not_allowed(
            "Ingestion by path is disabled on this gateway (retrieval.allowed_roots is empty)."
        )
    if "://" in path:
        raise _path_not_allowed("Give a local path; URLs are not ingested by the admin API.")
    require_rag_extra()
    from retrieval.ingest import expand_paths

    resolved_roots = [root.expanduser().resolve() for root in roots]
    files = [str(Path(f).resolve()) for f in expand_paths([Path(path).expanduser().resolve()])]
    for file in files:
        if not any(Path(file).is_relative_to(root) for root in resolved_roots):
            raise _path_not_allowed("The path is not under retrieval.allowed_roots.")
    return files


async def _uploaded(request: Request, settings: Settings) -> tuple[list[SourceDocument], bool]:
    if declared_length(request, settings.retrieval.max_upload_mib * MIB) is None:
        raise InvalidRequestError(
            "Uploads must declare their size (Content-Length).", code="length_required"
        )
    form = await request.form(max_files=MAX_FILES_PER_UPLOAD, max_fields=8)
    try:
        uploads = [v for k, v in form.multi_items() if k == "file" and isinstance(v, UploadFile)]
        if not uploads:
            raise InvalidRequestError(
                "Missing required parameter: 'file' (Markdown, text, HTML or PDF).",
                param="file",
                code="missing_required_parameter",
            )
        fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str)}
        meta = validated(UploadFields, fields)
        require_rag_extra()
        from retrieval import SourceDocument

        documents = []
        for upload in uploads:
            name = Path(upload.filename or "upload").name
            documents.append(SourceDocument(await upload.read(), name, name))
        return documents, meta.skip_errors
    finally:
        await form.close()


@router.post("/{name}/documents")
async def ingest_documents(
    name: str, request: Request, service: RetrievalDep, settings: SettingsDep
) -> IngestResponse:
    """Add or replace documents (unchanged ones are skipped) as one new version."""
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        inputs, skip_errors = await _uploaded(request, settings)
        results = await service.ingest(name, inputs, skip_errors=skip_errors)
    else:
        raw = await read_json_body(request, settings.limits.max_request_bytes)
        body = validated(IngestPathRequest, raw)
        # Resolving symlinks and walking a folder is blocking file I/O (slow on a
        # network share): off the event loop.
        files = await asyncio.to_thread(allowed_files, body.path, settings.retrieval.allowed_roots)
        results = await service.ingest(name, files, skip_errors=body.skip_errors)
    return IngestResponse(collection=name, data=[IngestedDocument.build(r) for r in results])


@router.get("")
async def list_collections(service: RetrievalDep) -> CollectionList:
    infos = await service.list_collections()
    return CollectionList(data=[CollectionCard.build(info) for info in infos])


@router.get("/{name}/documents")
async def list_documents(name: str, service: RetrievalDep) -> DocumentList:
    documents = await service.list_documents(name)
    return DocumentList(collection=name, data=[DocumentCard.build(d) for d in documents])


@router.delete("/{name}/documents/{document_id}")
async def delete_document(name: str, document_id: str, service: RetrievalDep) -> Deleted:
    await service.delete_document(name, document_id)
    return Deleted(id=document_id, object="collection.document")


@router.delete("/{name}")
async def delete_collection(name: str, service: RetrievalDep) -> Deleted:
    await service.delete_collection(name)
    return Deleted(id=name, object="collection")
