"""``GatewayState``: everything built once at start-up and handed to routes."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Settings
from gateway.engine.interface import Engine
from gateway.model_catalog import ModelCatalog
from gateway.serving.chat import ChatCompletionService
from gateway.serving.completions import CompletionService
from gateway.serving.prompt_renderer import PromptRenderer


@dataclass(frozen=True)
class GatewayState:
    settings: Settings
    engine: Engine
    catalog: ModelCatalog
    chat: ChatCompletionService
    completions: CompletionService


def build_state(settings: Settings, engine: Engine, renderer: PromptRenderer) -> GatewayState:
    catalog = ModelCatalog.from_paths(
        settings.model.served_name,
        [(a.name, str(a.path)) for a in settings.adapters],
        engine.max_model_len,
    )
    return GatewayState(
        settings=settings,
        engine=engine,
        catalog=catalog,
        chat=ChatCompletionService(engine, renderer, catalog, settings.limits),
        completions=CompletionService(engine, renderer, catalog, settings.limits),
    )
