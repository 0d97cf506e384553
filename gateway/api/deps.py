"""Typed dependencies: routes ask for what they need, never for ``app.state``."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from gateway.adapter_runtime.lifecycle import AdapterLifecycle
from gateway.config import Settings
from gateway.engine.interface import Engine
from gateway.errors import EngineUnavailableError
from gateway.model_catalog import ModelCatalog
from gateway.serving.chat import ChatCompletionService
from gateway.serving.completions import CompletionService
from gateway.state import GatewayState


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


def require_admin(state: StateDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """401/403 unless the request carries the admin key (see ``AdminGuard``)."""
    state.admin_guard.check(authorization)


EngineDep = Annotated[Engine, Depends(get_engine)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
ChatServiceDep = Annotated[ChatCompletionService, Depends(get_chat)]
CompletionServiceDep = Annotated[CompletionService, Depends(get_completions)]
LifecycleDep = Annotated[AdapterLifecycle, Depends(get_lifecycle)]
SettingsDep = Annotated[Settings, Depends(get_settings)]


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client has closed the connection (body already read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
