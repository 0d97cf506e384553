"""Typed dependencies: routes ask for what they need, never for ``app.state``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, Request

from gateway.adapter_runtime.lifecycle import AdapterLifecycle
from gateway.config import Settings
from gateway.engine.interface import Engine
from gateway.errors import EngineUnavailableError
from gateway.model_catalog import ModelCatalog
from gateway.rag.service import RetrievalService
from gateway.serving.chat import ChatCompletionService
from gateway.serving.completions import CompletionService
from gateway.state import GatewayState
from gateway.tenancy.directory import Caller
from gateway.tenancy.gatekeeper import Gatekeeper


def get_state(request: Request) -> GatewayState:
    state = getattr(request.app.state, "gateway", None)
    if not isinstance(state, GatewayState):
        raise EngineUnavailableError("The gateway is still starting.")
    return state


StateDep = Annotated[GatewayState, Depends(get_state)]


def get_engine(state: StateDep) -> Engine:
    return state.engine


def get_catalog(state: StateDep) -> ModelCatalog:
    return state.catalog


def get_chat(state: StateDep) -> ChatCompletionService:
    return state.chat


def get_completions(state: StateDep) -> CompletionService:
    return state.completions


def get_lifecycle(state: StateDep) -> AdapterLifecycle:
    return state.lifecycle


def get_settings(state: StateDep) -> Settings:
    return state.settings


def get_gatekeeper(state: StateDep) -> Gatekeeper:
    return state.gatekeeper


def get_retrieval(state: StateDep) -> RetrievalService:
    return state.retrieval


def authenticate(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> Caller:
    """The caller behind ``Authorization: Bearer <key>``; 401 for none or a bad one."""
    return state.gatekeeper.authenticate(authorization)


def require_admin(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """401/403 unless the request carries the admin key (see ``AdminGuard``)."""
    state.admin_guard.check(authorization)


EngineDep = Annotated[Engine, Depends(get_engine)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
ChatServiceDep = Annotated[ChatCompletionService, Depends(get_chat)]
CompletionServiceDep = Annotated[CompletionService, Depends(get_completions)]
LifecycleDep = Annotated[AdapterLifecycle, Depends(get_lifecycle)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
GatekeeperDep = Annotated[Gatekeeper, Depends(get_gatekeeper)]
RetrievalDep = Annotated[RetrievalService, Depends(get_retrieval)]
CallerDep = Annotated[Caller, Depends(authenticate)]


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client has closed the connection (body already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def started_stream(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Take the first event now, so errors raised before it are plain HTTP errors, and so
    the generator is started: if the client leaves before the body is sent, asyncio
    closes it and its ``finally`` (accounting, in-flight release) still runs.
    """
    first = await anext(events)

    async def body() -> AsyncIterator[str]:
        yield first
        async for item in events:
            yield item

    return body()
