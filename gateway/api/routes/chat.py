from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from gateway.api.deps import CallerDep, ChatServiceDep, started_stream, wait_for_disconnect
from gateway.protocol.chat import ChatCompletionRequest, ChatCompletionResponse
from gateway.serving.disconnect import cancel_on_disconnect
from gateway.serving.sse import with_error_events

router = APIRouter()


@router.post("/v1/chat/completions", response_model=ChatCompletionResponse)
async def create_chat_completion(
    body: ChatCompletionRequest,
    request: Request,
    service: ChatServiceDep,
    caller: CallerDep,
) -> Response:
    prepared = await service.prepare(body, caller)
    if body.stream:
        events = with_error_events(await started_stream(service.stream(prepared)))
        return StreamingResponse(events, media_type="text/event-stream")
    result = await cancel_on_disconnect(
        service.complete(prepared), lambda: wait_for_disconnect(request)
    )
    return Response(result.json_body(), media_type="application/json")
