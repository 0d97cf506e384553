from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gateway.api.deps import CallerDep, PipelineDep
from gateway.api.generation import respond
from gateway.api.generation_route import GenerationRoute
from gateway.pipeline.chat import ChatEndpoint
from gateway.protocol.chat import ChatCompletionRequest, ChatCompletionResponse

router = APIRouter(route_class=GenerationRoute)  # no per-request dependency solving


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, pipeline: PipelineDep, caller: CallerDep
) -> Response:
    return await respond(pipeline, ChatEndpoint(body), caller, request)
