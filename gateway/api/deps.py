"""Typed dependencies: routes ask for what they need, never for ``app.state``.

Every dependency is ``async def``: FastAPI runs plain ``def`` dependencies in its
thread pool, and these are cheap reads (or, for ``authenticate``, event-loop-only).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from gateway.adapter_runtime.lifecycle import AdapterLifecycle
from gateway.api.generation_route import current_state
from gateway.engine.interface import Generator
from gateway.errors import GatewayError
from gateway.metrics import Rejection
from gateway.model_catalog import ModelCatalog
from gateway.pipeline.pipeline import GenerationPipeline
from gateway.rag.embeddings import EmbeddingService
from gateway.rag.service import RetrievalService
from gateway.settings import Settings
from gateway.state import GatewayState
from gateway.tenancy.directory import Caller
from gateway.tenancy.gatekeeper import Gatekeeper


async def get_state(request: Request) -> GatewayState:
    return current_state(request)


StateDep = Annotated[GatewayState, Depends(get_state)]


async def get_engine(state: StateDep) -> Generator:
    return state.engine


async def get_catalog(state: StateDep) -> ModelCatalog:
    return state.catalog


async def get_pipeline(state: StateDep) -> GenerationPipeline:
    return state.pipeline


async def get_lifecycle(state: StateDep) -> AdapterLifecycle:
    return state.lifecycle


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_gatekeeper(state: StateDep) -> Gatekeeper:
    return state.gatekeeper


async def get_retrieval(state: StateDep) -> RetrievalService:
    return state.retrieval


async def get_embeddings(state: StateDep) -> EmbeddingService:
    return state.embeddings


async def authenticate(
    state: StateDep, authorization: Annotated[str | None, Header()] = None
) -> Caller:
    """The caller behind ``Authorization: Bearer <key>``; 401 for none or a bad one."""
    return state.gatekeeper.authenticate(authorization)


async def require_admin(
    state: StateDep, request: Request, authorization: Annotated[str | None, Header()] = None
) -> None:
    """401/403 unless the request carries the admin key, 429 for a client that guessed
    too often (see ``AdminGuard``)."""
    check_admin(state, request, authorization)


def check_admin(state: GatewayState, request: Request, authorization: str | None) -> None:
    """``AdminGuard.check`` with the client's address; every refusal is counted in
    ``loragate_rejections_total{reason="admin_key"}``."""
    try:
        state.admin_guard.check(authorization, request.client.host if request.client else None)
    except GatewayError:
        state.metrics.rejected(Rejection.ADMIN_KEY)
        raise


EngineDep = Annotated[Generator, Depends(get_engine)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]
PipelineDep = Annotated[GenerationPipeline, Depends(get_pipeline)]
LifecycleDep = Annotated[AdapterLifecycle, Depends(get_lifecycle)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
GatekeeperDep = Annotated[Gatekeeper, Depends(get_gatekeeper)]
RetrievalDep = Annotated[RetrievalService, Depends(get_retrieval)]
EmbeddingsDep = Annotated[EmbeddingService, Depends(get_embeddings)]
CallerDep = Annotated[Caller, Depends(authenticate)]
