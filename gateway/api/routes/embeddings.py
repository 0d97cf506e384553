from __future__ import annotations

from fastapi import APIRouter, Response

from gateway.api.deps import CallerDep, EmbeddingsDep
from gateway.protocol.embeddings import CreateEmbeddingRequest, CreateEmbeddingResponse

router = APIRouter()


@router.post("/v1/embeddings", response_model=CreateEmbeddingResponse)
async def create_embeddings(
    body: CreateEmbeddingRequest, service: EmbeddingsDep, caller: CallerDep
) -> Response:
    """Vectors of the inputs from an embedding model the caller may use (see /v1/models)."""
    return Response(await service.create(caller, body), media_type="application/json")
