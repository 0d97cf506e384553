"""Shared fixtures. The real vLLM engine fixtures live in ``tests/engine_fixtures.py``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.config import Settings
from gateway.serving.prompt_renderer import PromptRenderer
from tests.fakes import FakeEngine
from tests.modelkit import smollm2_tokenizer_dir

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = ["tests.engine_fixtures"]


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    return smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def renderer(tokenizer_dir: Path) -> PromptRenderer:
    return PromptRenderer.from_model_dir(tokenizer_dir)


@dataclass
class FakeGateway:
    client: httpx.AsyncClient
    engine: FakeEngine
    settings: Settings


def fake_settings(tokenizer_dir: Path, **overrides: object) -> Settings:
    data: dict[str, object] = {
        "model": {"path": tokenizer_dir, "name": "tiny-base"},
        "adapters": [
            {"name": "pirate", "path": "/adapters/pirate"},
            {"name": "robot", "path": "/adapters/robot"},
        ],
    }
    data.update(overrides)
    return Settings.load(None, **data)


@pytest.fixture
async def fake_gateway(tokenizer_dir: Path, renderer: PromptRenderer) -> AsyncIterator[FakeGateway]:
    engine = FakeEngine()
    settings = fake_settings(tokenizer_dir, limits={"max_request_bytes": 4096, "max_n": 4})
    app = create_app(settings, engine_factory=lambda _: engine, renderer=renderer)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            yield FakeGateway(client, engine, settings)
