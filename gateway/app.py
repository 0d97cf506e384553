"""``create_app(settings)``: the FastAPI application, its state built in the lifespan."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.adapter_runtime.startup import prepare_adapters
from gateway.admin import routes as admin_routes
from gateway.api import error_handlers
from gateway.api.body_limit import BodySizeLimit
from gateway.api.routes import chat, completions, health, models
from gateway.config import Settings
from gateway.engine.interface import Engine
from gateway.serving.prompt_renderer import PromptRenderer
from gateway.state import GatewayState, build_state, open_registry

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
    """Build the app. The registry and the engine start when the app starts (lifespan).

    The registry opens first (it locks its data folder), so a second gateway on the
    same folder fails at once instead of after the engine's start-up.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = await asyncio.to_thread(open_registry, settings)
        state: GatewayState | None = None
        try:
            engine = engine_factory(settings)
            try:
                prompt_renderer = renderer or PromptRenderer.from_model_dir(settings.model.path)
                state = build_state(settings, engine, prompt_renderer, registry)
                config_adapters = [(a.name, a.path) for a in settings.adapters]
                await prepare_adapters(state.lifecycle, config_adapters)
                app.state.gateway = state
                logger.info("loragate ready: model %s", settings.model.served_name)
                yield
            finally:
                app.state.gateway = None
                if state is not None:
                    await state.lifecycle.close()
                await engine.shutdown()
        finally:
            registry.close()

    app = FastAPI(title="loragate", version="0.1.0", lifespan=lifespan)
    error_handlers.install(app)
    for router in (
        chat.router,
        completions.router,
        models.router,
        health.router,
        admin_routes.router,
    ):
        app.include_router(router)
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.limits.max_request_bytes,
        # Registration takes archive uploads; its route applies its own limits.
        exempt_paths=[admin_routes.REGISTER_PATH],
    )
    return app
