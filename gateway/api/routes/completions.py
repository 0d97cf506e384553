from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse

from gateway.api.deps import CallerDep, CompletionServiceDep, started_stream, wait_for_disconnect
from gateway.protocol.completions import CompletionRequest, CompletionResponse
from gateway.serving.disconnect import cancel_on_disconnect
from gateway.serving.sse import with_error_events

router = APIRouter()


@router.post("/v1/completions", response_model=CompletionResponse)
async def create_completion(
    body: CompletionRequest,
    request: Request,
    service: CompletionServiceDep,
    caller: CallerDep,
) -> Response:
    prepared = service.prepare(body, caller)
    if body.stream:
        events = with_error_events(await started_stream(service.stream(prepared)))
        return StreamingResponse(events, media_type="text/event-stream")
    result = await cancel_on_disconnect(
        service.complete(prepared), lambda: wait_for_disconnect(request)
    )
    return Response(result.model_dump_json(), media_type="application/json")
