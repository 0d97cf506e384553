"""``/v1/responses``: create (through the pipeline), retrieve, delete, input items.

A stored response belongs to the tenant that created it: for anyone else its id gets
the same 404, byte for byte, as an id that never existed.
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response

from gateway.api.deps import CallerDep, PipelineDep, StateDep
from gateway.api.generation import respond
from gateway.api.generation_route import GenerationRoute, current_state
from gateway.errors import InvalidRequestError, NotFoundError
from gateway.pipeline.responses import ResponsesEndpoint
from gateway.protocol.responses import (
    InputItemList,
    ResponseDeleted,
    ResponseObject,
    ResponsesRequest,
)
from gateway.tenancy.directory import Caller
from gateway.tenancy.response_store import ResponseStore, StoredResponse

generation = APIRouter(route_class=GenerationRoute)  # no per-request dependency solving
router = APIRouter()


def not_found(response_id: str, param: str | None = None) -> NotFoundError:
    return NotFoundError(f"No response found with id '{response_id}'.", param=param)


async def _stored(
    store: ResponseStore, caller: Caller, response_id: str, param: str | None = None
) -> StoredResponse:
    record = await asyncio.to_thread(store.get, caller.label, response_id)
    if record is None:
        raise not_found(response_id, param)
    return record


@generation.post("/v1/responses", response_model=ResponseObject)
async def create_response(
    body: ResponsesRequest, request: Request, pipeline: PipelineDep, caller: CallerDep
) -> Response:
    state = current_state(request)
    previous = None
    if body.previous_response_id is not None:
        previous = await _stored(
            state.responses, caller, body.previous_response_id, "previous_response_id"
        )
    endpoint = ResponsesEndpoint(
        body,
        owner=caller.label,
        store=state.responses,
        settings=state.settings.responses,
        previous=previous,
    )
    response = await respond(pipeline, endpoint, caller, request)
    await endpoint.save()
    return response


@router.get("/v1/responses/{response_id}", response_model=ResponseObject)
async def retrieve_response(response_id: str, state: StateDep, caller: CallerDep) -> Response:
    record = await _stored(state.responses, caller, response_id)
    return Response(json.dumps(record.response, ensure_ascii=False), media_type="application/json")


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, state: StateDep, caller: CallerDep) -> ResponseDeleted:
    if not await asyncio.to_thread(state.responses.delete, caller.label, response_id):
        raise not_found(response_id)
    return ResponseDeleted(id=response_id)


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(
    response_id: str,
    state: StateDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
    include: Annotated[list[str] | None, Query()] = None,
) -> InputItemList:
    """The request's own input items (not the earlier turns of its chain), newest first
    unless ``order=asc``, ``limit`` at a time from after the item ``after``."""
    if include:
        raise InvalidRequestError(f"include {include[0]!r} is not available.", param="include")
    record = await _stored(state.responses, caller, response_id)
    items = record.input_items if order == "asc" else record.input_items[::-1]
    if after is not None:
        ids = [item["id"] for item in items]
        if after not in ids:
            raise InvalidRequestError(f"No input item with id '{after}'.", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return InputItemList(
        data=page,
        first_id=page[0]["id"] if page else "",
        last_id=page[-1]["id"] if page else "",
        has_more=len(items) > limit,
    )


router.include_router(generation)
