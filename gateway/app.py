"""``create_app(settings)``: the FastAPI application, its state built in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from gateway.adapter_runtime.residency import Residency
from gateway.adapter_runtime.startup import prepare_adapters
from gateway.adapter_runtime.traffic_split import adapter_labels
from gateway.admin import collection_routes, promote_routes, tenant_routes
from gateway.admin import routes as admin_routes
from gateway.admin.upload_limit import BodySizeLimitWithUploads
from gateway.api import error_handlers
from gateway.api.browser_guard import BrowserGuard
from gateway.api.observer import RequestObserver
from gateway.api.routes import (
    chat,
    completions,
    health,
    models,
    operations,
    responses,
    retrieval,
)
from gateway.api.routes import embeddings as embedding_routes
from gateway.config_reload import reload_tenancy
from gateway.console import routes as console
from gateway.engine.factory import start_engine
from gateway.engine.interface import Engine
from gateway.errors import GatewayError
from gateway.metrics import EngineSnapshot, GatewayMetrics
from gateway.model_catalog import source_owner
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.openapi_docs import docs_app_arguments
from gateway.pipeline.drain import Drain
from gateway.playground import routes as playground
from gateway.rag.provider import StoreProvider, open_store, should_preload
from gateway.settings import Settings
from gateway.state import GatewayState, build_state, open_registry
from gateway.tenancy.usage import UsageUnavailableError
from gateway.tracing import TraceMiddleware, Tracing
from retrieval import Embedder

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Engine]


def start_configured_engine(settings: Settings) -> Engine:
    return start_engine(settings.model, settings.engine)


def create_app(
    settings: Settings,
    engine_factory: EngineFactory = start_configured_engine,
    renderer: PromptRenderer | None = None,
    *,
    config_path: Path | None = None,
    config_overrides: Mapping[str, Any] | None = None,
    metrics: GatewayMetrics | None = None,
    embedder: Embedder | None = None,
    drain: Drain | None = None,
    tracing: Tracing | None = None,
) -> FastAPI:
    """Build the app. The registry and the engine start when the app starts (lifespan).

    The registry opens first (it locks its data folder), so a second gateway on the
    same folder fails at once instead of after the engine's start-up. The retrieval
    store (and its embedding model) loads in a thread while the engine starts when
    ``retrieval.preload`` says so, else on first use; tests pass a fake ``embedder``.
    ``drain`` is the shutdown state the server's SIGTERM handler drives (default: one
    of the app's own, for servers that stop it another way). ``tracing`` (default: from
    ``settings.tracing`` and the ``OTEL_*`` variables) is shut down, its last spans
    exported, when the app stops.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = await asyncio.to_thread(open_registry, settings)
        state: GatewayState | None = None
        background: list[asyncio.Task[None]] = []
        stop_sighup: Callable[[], None] = _no_op
        stores = StoreProvider(
            lambda: open_store(settings.collections_root, settings.retrieval, embedder)
        )
        try:
            # Before the embedder's thread starts: transformers' lazy imports are not
            # thread-safe (a tokenizer class looked up while that thread imports
            # sentence-transformers can be missing: AttributeError at start-up).
            prompt_renderer = renderer or PromptRenderer.from_model_dir(settings.model.path)
            if should_preload(settings):
                stores.start()  # a worker thread, overlapping the engine's start-up
            engine = engine_factory(settings)
            try:
                state = build_state(
                    settings,
                    engine,
                    prompt_renderer,
                    registry,
                    gateway_metrics,
                    stores,
                    config_path,
                    config_overrides,
                    drain,
                    app_tracing,
                )
                gateway_metrics.set_engine_source(engine_snapshot(state))
                config_adapters = [(a.name, a.path) for a in settings.adapters]
                await prepare_adapters(state.lifecycle, config_adapters)
                if should_preload(settings):
                    await stores.get()
                label_models(state)
                app.state.gateway = state
                background.append(asyncio.create_task(flush_usage_periodically(state)))
                await state.on_demand.refresh()  # adapters fetched before a restart
                background.append(asyncio.create_task(state.on_demand.run()))
                # Tenants and keys changed through the other gateways; last-use times.
                interval = settings.shared_store.refresh_seconds
                background.append(asyncio.create_task(state.tenant_admin.follow(interval)))
                checks = settings.rollouts.rollback_check_seconds
                background.append(asyncio.create_task(state.canary_watch.run(checks)))
                if state.registry.shared:  # pins made through the other gateways
                    interval = settings.shared_store.refresh_seconds
                    follow = state.lifecycle.follow_registry(interval)
                    background.append(asyncio.create_task(follow))
                stop_sighup = _reload_on_sighup(state, config_path)
                logger.info("loragate ready: model %s", settings.model.served_name)
                yield
            finally:
                app.state.gateway = None
                if state is not None:
                    stop_sighup()
                    for task in background:
                        task.cancel()
                    if state.pipeline.shadows is not None:
                        await state.pipeline.shadows.close()
                    await state.lifecycle.close()
                    await state.embeddings.close()
                    await state.gatekeeper.close()
                    await state.tenant_admin.close()
                    await asyncio.to_thread(state.usage.close)
                    await asyncio.to_thread(state.responses.close)
                    await asyncio.to_thread(state.retrieval.close)
                await engine.shutdown()
        finally:
            registry.close()
            try:
                await asyncio.to_thread(app_tracing.shutdown)
            except RuntimeError:  # the loop's executor is gone (a failed start): flush here
                app_tracing.shutdown()

    gateway_metrics = metrics or GatewayMetrics(enabled=settings.metrics.enabled)
    app_tracing = tracing or Tracing.from_settings(settings.tracing)
    app = FastAPI(
        title="loragate",
        version="0.1.0",
        lifespan=lifespan,
        **docs_app_arguments(settings.server.docs, "loragate"),
    )
    error_handlers.install(app)
    for router in (
        chat.router,
        completions.router,
        embedding_routes.router,
        responses.router,
        models.router,
        health.router,
        admin_routes.router,
        promote_routes.router,
        tenant_routes.router,
        collection_routes.router,
        retrieval.router,
        operations.router,
        playground.router,
        console.router,
    ):
        app.include_router(router)
    app.add_middleware(
        BodySizeLimitWithUploads,
        max_bytes=settings.limits.max_request_bytes,
        # Registration and document ingestion take uploads; their routes apply their
        # own limits.
        exempt_paths=[admin_routes.REGISTER_PATH],
        exempt_pattern=collection_routes.DOCUMENTS_PATH,
    )
    if app_tracing.enabled:  # inside the observer: its request id is set
        app.add_middleware(TraceMiddleware, tracing=app_tracing)
    app.add_middleware(
        BrowserGuard,
        open_mode=lambda: _open_mode(app),
        open_mode_hosts=settings.server.open_mode_hosts,
        any_host=settings.server.allow_open_access,
        upload_paths=[admin_routes.REGISTER_PATH],
        upload_pattern=collection_routes.DOCUMENTS_PATH,
    )
    app.add_middleware(RequestObserver, metrics=gateway_metrics)
    return app


def _open_mode(app: FastAPI) -> bool:
    state: GatewayState | None = getattr(app.state, "gateway", None)
    return state is not None and state.gatekeeper.directory.open_mode


USAGE_FLUSH_SECONDS = 5.0


async def flush_usage_periodically(
    state: GatewayState, seconds: float = USAGE_FLUSH_SECONDS
) -> None:
    """Every ``seconds``: write usage to its store, refresh metric label bounds and adapter
    residency (an adapter registered at runtime is labelled "other" until then). A store
    that is down does not stop the refresh."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await asyncio.to_thread(state.usage.flush)
        except UsageUnavailableError as exc:
            # Expected while the shared store is down: one line, the rows stay queued.
            logger.warning(
                "usage not written yet (%d rows queued): %s", state.usage.unsent_rows, exc.message
            )
        except Exception:
            logger.exception("periodic usage flush failed")
        try:
            label_models(state)  # adapters registered or aliases reloaded since
            resident = await state.lifecycle.residency()
            state.residency_seen[Residency.CPU_CACHE] = len(resident.loaded)
            if resident.slots is not None:
                state.residency_seen[Residency.GPU_SLOT] = len(resident.slots)
        except Exception:
            logger.exception("periodic label/residency refresh failed")


def _no_op() -> None:
    pass


def _reload_on_sighup(state: GatewayState, config_path: Path | None) -> Callable[[], None]:
    """SIGHUP re-reads the config file (main thread only: signals need it).

    Returns the function that removes the handler again (at shutdown).
    """
    if config_path is None or threading.current_thread() is not threading.main_thread():
        return _no_op

    def reload() -> None:
        try:
            reload_tenancy(state, config_path)
        except GatewayError as exc:
            logger.error("SIGHUP reload refused: %s", exc.message)

    loop = asyncio.get_running_loop()
    try:
        loop.add_signal_handler(signal.SIGHUP, reload)
    except (NotImplementedError, RuntimeError):
        return _no_op

    def remove() -> None:
        loop.remove_signal_handler(signal.SIGHUP)

    return remove


def label_models(state: GatewayState) -> None:
    """Bound the metric labels to the models this gateway serves (and tenants' aliases)."""
    aliases = {a for t in state.gatekeeper.directory.config.tenants.values() for a in t.aliases}
    # Adapters fetched from tenants' sources may be thousands: they count as "other".
    adapters = {e.name for e in state.registry.entries() if source_owner(e) is None}
    state.metrics.labels.update(
        models={state.catalog.base_id, state.embeddings.model_id, *adapters, *aliases},
        adapters=adapter_labels(state.registry),  # names, and name@version in splits
    )


def engine_snapshot(state: GatewayState) -> Callable[[], EngineSnapshot]:
    """Scrape-time reader: the scheduler's figures plus the last adapter residency seen."""

    def read() -> EngineSnapshot:
        f = state.engine.figures()
        return EngineSnapshot(
            running=f.running,
            waiting=f.waiting,
            kv_cache_usage=f.kv_cache_usage,
            adapters_in_slots=state.residency_seen.get(Residency.GPU_SLOT, 0),
            adapters_in_cpu_cache=state.residency_seen.get(Residency.CPU_CACHE, 0),
            adapters_running=f.adapters_running,
        )

    return read
