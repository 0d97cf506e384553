"""The real vLLM engine, started once per test session behind a real uvicorn server.

The gateway runs in a background thread on a loopback port with the tiny random
Llama and six random adapters (more than ``max_loras`` and ``max_cpu_loras``), so
integration tests (httpx) and end-to-end tests (OpenAI SDK) share one engine.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.settings import Settings
from gateway.state import GatewayState
from tests.support.modelkit import tiny_llama_dir, write_random_adapter

T = TypeVar("T")
ADAPTERS = [f"a{i}" for i in range(1, 7)]
LIVE_ADMIN_KEY = "live-admin-key-0123456789"


def live_adapter_root(tiny_kit: tuple[Path, dict[str, Path]]) -> Path:
    """The folder holding the session's adapters; tests may write more adapters in it."""
    return next(iter(tiny_kit[1].values())).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveGateway:
    """A gateway serving on loopback, plus access to its state for white-box checks."""

    base_url: str
    settings: Settings
    server: Any
    thread: threading.Thread

    @property
    def state(self) -> GatewayState:
        state = self.server.config.app.state.gateway
        assert isinstance(state, GatewayState)
        return state

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run a coroutine on the server's event loop (the engine lives there)."""
        loop = self.server.loop
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)

    def unfinished_requests(self) -> int:
        """Requests vLLM still holds (white-box: the engine under the tracking wrapper)."""
        llm = self.state.engine.inner.llm  # type: ignore[attr-defined]

        async def count() -> int:
            return int(llm.get_num_unfinished_requests())

        return self.run(count())


def start_gateway(
    settings: Settings, *, ready_timeout: float = 300, app: FastAPI | None = None
) -> LiveGateway:
    """uvicorn on ``settings.server``'s address in a thread, serving ``app`` (default:
    the app ``settings`` make, real engine and all)."""
    import uvicorn

    app = app or create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level="warning",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    loop_holder: dict[str, asyncio.AbstractEventLoop] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        loop_holder["loop"] = loop
        server.loop = loop  # type: ignore[attr-defined]
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.serve())

    thread = threading.Thread(target=serve, name="gateway-under-test", daemon=True)
    thread.start()
    base_url = f"http://{settings.server.host}:{settings.server.port}"
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise RuntimeError("the gateway under test exited during start-up")
        try:
            if httpx.get(base_url + "/ready", timeout=2).status_code == 200:
                return LiveGateway(base_url, settings, server, thread)
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the gateway under test did not become ready")


def stop_gateway(gateway: LiveGateway) -> None:
    gateway.server.should_exit = True
    gateway.thread.join(timeout=60)


@pytest.fixture(scope="session")
def tiny_kit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    base = tiny_llama_dir()
    root = tmp_path_factory.mktemp("adapters")
    adapters = {
        name: write_random_adapter(base, root / name, seed=i) for i, name in enumerate(ADAPTERS, 1)
    }
    return base, adapters


@pytest.fixture(scope="session")
def live_gateway(
    tiny_kit: tuple[Path, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    """Config adapters a1..a6 (imported into a fresh registry); the admin API takes
    ``LIVE_ADMIN_KEY`` and registers from ``live_adapter_root(tiny_kit)``."""
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    base, adapters = tiny_kit
    settings = Settings.load(
        None,
        model={"path": base, "name": "tiny-llama"},
        adapters=[{"name": n, "path": p} for n, p in adapters.items()],
        registry={
            "data_dir": tmp_path_factory.mktemp("registry"),
            "allowed_roots": [live_adapter_root(tiny_kit)],
        },
        admin={"api_key": LIVE_ADMIN_KEY},
        engine={
            "max_model_len": 1024,
            "max_loras": 2,
            "max_cpu_loras": 3,
            "max_lora_rank": 8,
            "kv_cache_gib": 1,
            "enforce_eager": True,
        },
        server={"host": "127.0.0.1", "port": free_port()},
        limits={"max_n": 4},
    )
    gateway = start_gateway(settings)
    yield gateway
    stop_gateway(gateway)
