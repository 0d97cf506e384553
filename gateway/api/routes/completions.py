from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gateway.api.deps import CallerDep, PipelineDep
from gateway.api.generation import respond
from gateway.api.generation_route import GenerationRoute
from gateway.pipeline.completions import CompletionEndpoint
from gateway.protocol.completions import CompletionRequest, CompletionResponse

router = APIRouter(route_class=GenerationRoute)  # no per-request dependency solving


@router.post("/v1/completions", response_model=CompletionResponse)
async def create_completion(
    body: CompletionRequest, request: Request, pipeline: PipelineDep, caller: CallerDep
) -> Response:
    return await respond(pipeline, CompletionEndpoint(body), caller, request)
