from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import CallerDep, GatekeeperDep, RetrievalDep
from gateway.rag.protocol import SearchRequest, SearchResponse, SearchResult

router = APIRouter()


@router.post("/v1/retrieval/search")
async def search(
    body: SearchRequest, service: RetrievalDep, gatekeeper: GatekeeperDep, caller: CallerDep
) -> SearchResponse:
    """Ranked chunks from the caller's collections (what a chat request would retrieve)."""
    await gatekeeper.admit_search(caller)
    hits = await service.search(caller, body.names(), body.query, top_k=body.top_k, mode=body.mode)
    return SearchResponse(
        query=body.query,
        mode=body.mode or service.settings.mode,
        data=[SearchResult.build(rank, hit) for rank, hit in enumerate(hits, start=1)],
    )
