"""``create_app(settings)``: the FastAPI application, its state built in the lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.api import error_handlers
from gateway.api.body_limit import BodySizeLimit
from gateway.api.routes import chat, completions, health, models
from gateway.config import Settings
from gateway.engine.interface import Engine
from gateway.serving.prompt_renderer import PromptRenderer
from gateway.state import build_state

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Engine]


def start_vllm_engine(settings: Settings) -> Engine:
    from gateway.engine.vllm_engine import VLLMEngine

    return VLLMEngine.start(settings.model, settings.engine)


def create_app(
    settings: Settings,
    engine_factory: EngineFactory = start_vllm_engine,
    renderer: PromptRenderer | None = None,
) -> FastAPI:
    """Build the app. The engine starts when the app starts (lifespan), not here."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = engine_factory(settings)
        try:
            prompt_renderer = renderer or PromptRenderer.from_model_dir(settings.model.path)
            app.state.gateway = build_state(settings, engine, prompt_renderer)
            logger.info("loragate ready: model %s", settings.model.served_name)
            yield
        finally:
            app.state.gateway = None
            await engine.shutdown()

    app = FastAPI(title="loragate", version="0.1.0", lifespan=lifespan)
    error_handlers.install(app)
    for router in (chat.router, completions.router, models.router, health.router):
        app.include_router(router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.limits.max_request_bytes)
    return app
