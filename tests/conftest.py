"""Shared fixtures. The real vLLM engine fixtures live in ``tests/support/engine_fixtures.py``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from retrieval.embedding import Embedder
from tests.support.fakes import FakeEngine
from tests.support.modelkit import smollm2_tokenizer_dir, tiny_llama_dir, write_random_adapter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = [
    "tests.support.engine_fixtures",
    "tests.support.remote_fixtures",
    "tests.support.postgres_fixtures",
    "tests.support.redis_fixtures",
    "tests.support.s3_server",
]

ADMIN_KEY = "test-admin-key-0123456789"

TIERS = ("unit", "integration", "system")
SYSTEM_FIXTURES = frozenset(
    {"live_gateway", "remote_gateway", "replicas", "live_demo", "browser", "instant_replica"}
)
"""Fixtures that start a real engine, replica or gateway process, or a browser."""
SYSTEM_MARKERS = ("engine", "demo")
INTEGRATION_FIXTURES = frozenset({"pg_server", "pg_url", "redis_url", "s3_server", "replica"})
"""Fixtures that start a Redis, PostgreSQL, S3 or other server in a subprocess."""


def tier_of(item: pytest.Item) -> str:
    """``unit``, ``integration`` or ``system``: a tier marker the test or its module sets
    (``pytestmark``) wins; else the heaviest of the fixtures it uses (directly or through
    other fixtures) and the ``engine``/``demo`` markers decides."""
    for tier in TIERS:
        if item.get_closest_marker(tier) is not None:
            return tier
    names = set(getattr(item, "fixturenames", ()))
    if names & SYSTEM_FIXTURES or any(item.get_closest_marker(m) for m in SYSTEM_MARKERS):
        return "system"
    if names & INTEGRATION_FIXTURES:
        return "integration"
    return "unit"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test ``unit``, ``integration`` or ``system`` (``make test-fast`` runs
    ``-m unit``)."""
    for item in items:
        tier = tier_of(item)
        if item.get_closest_marker(tier) is None:
            item.add_marker(tier)


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def renderer(tokenizer_dir: Path) -> PromptRenderer:
    return PromptRenderer.from_model_dir(tokenizer_dir)


@dataclass(frozen=True)
class FakeKit:
    """A real base model folder (random tiny Llama) and adapter folders that validate."""

    base: Path
    adapter_root: Path
    adapters: dict[str, Path]


@pytest.fixture(scope="session")
def fake_kit(tmp_path_factory: pytest.TempPathFactory) -> FakeKit:
    base = tiny_llama_dir()
    root = tmp_path_factory.mktemp("fake-adapters")
    adapters = {
        name: write_random_adapter(base, root / name, seed=seed)
        for seed, name in enumerate(("pirate", "robot"), start=1)
    }
    return FakeKit(base, root, adapters)


@dataclass
class FakeGateway:
    client: httpx.AsyncClient
    engine: FakeEngine
    settings: Settings
    app: FastAPI


def fake_settings(kit: FakeKit, data_dir: Path, **overrides: object) -> Settings:
    data: dict[str, object] = {
        "model": {"path": kit.base, "name": "tiny-base"},
        "adapters": [{"name": name, "path": path} for name, path in kit.adapters.items()],
        "registry": {"data_dir": data_dir, "allowed_roots": [kit.adapter_root]},
        "admin": {"api_key": ADMIN_KEY},
    }
    data.update(overrides)
    return Settings.load(None, **data)


@asynccontextmanager
async def run_fake_gateway(
    settings: Settings,
    renderer: PromptRenderer,
    engine: FakeEngine | None = None,
    *,
    embedder: Embedder | None = None,
) -> AsyncIterator[FakeGateway]:
    """The app over ASGI with a fake engine (and ``embedder`` for retrieval, when given),
    from start-up to shutdown."""
    engine = engine or FakeEngine()
    app = create_app(
        settings, engine_factory=lambda _: engine, renderer=renderer, embedder=embedder
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield FakeGateway(client, engine, settings, app)


@pytest.fixture
async def fake_gateway(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[FakeGateway]:
    settings = fake_settings(
        fake_kit, tmp_path / "registry", limits={"max_request_bytes": 4096, "max_n": 4}
    )
    async with run_fake_gateway(settings, renderer) as gateway:
        yield gateway
