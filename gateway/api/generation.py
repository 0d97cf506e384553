"""From a started pipeline request to an HTTP response: JSON, or server-sent events."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from fastapi import Request, Response

from gateway.api.event_stream import EventStreamResponse
from gateway.pipeline.disconnect import cancel_on_disconnect
from gateway.pipeline.endpoint import Endpoint
from gateway.pipeline.pipeline import GenerationPipeline
from gateway.protocol.sse import with_error_events
from gateway.tenancy.directory import Caller


async def respond(
    pipeline: GenerationPipeline, endpoint: Endpoint, caller: Caller, request: Request
) -> Response:
    """Every refusal is raised by ``start`` (a plain HTTP error); a failure after the
    stream began is an error event then ``[DONE]``; a client that leaves cancels the
    engine request, streaming or not, and one waiting in the engine's queue leaves it."""
    started = await pipeline.start(caller, endpoint, gone=lambda: _disconnected(request))
    if endpoint.stream:
        events = await _prefetched(endpoint.events(started.prepared, started.outputs()))
        limits = pipeline.limits
        prepared = started.prepared
        sequences = len(prepared.generations) * prepared.n
        return EventStreamResponse(
            with_error_events(events),
            buffer_bytes=limits.stream_buffer_bytes,
            stall_seconds=limits.client_stall_seconds,
            on_stall=partial(pipeline.queue.stalled, caller.label, sequences),
        )
    outputs = await cancel_on_disconnect(started.collect(), lambda: _disconnected(request))
    body = endpoint.response_body(started.prepared, outputs)
    return Response(body, media_type="application/json")


async def _prefetched(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Take the first event now: the engine has produced its first output (or failed,
    which is then a plain HTTP error), and the generator is started, so if the client
    leaves before the body is sent, closing it still runs its ``finally`` (accounting,
    the in-flight slot)."""
    first = await anext(events)

    async def body() -> AsyncIterator[str]:
        yield first
        async for item in events:
            yield item

    return body()


async def _disconnected(request: Request) -> None:
    """Return when the client has closed the connection (the body is already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
