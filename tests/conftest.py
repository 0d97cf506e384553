"""Shared fixtures. The real vLLM engine fixtures live in ``tests/support/engine_fixtures.py``."""

from __future__ import annotations

import ast
import os
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
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
NOT_UNIT_MARKERS = frozenset({"integration", "system", *SYSTEM_MARKERS})


def tier_of(item: pytest.Item) -> str:
    """``unit``, ``integration`` or ``system``: a tier marker the test or its module sets
    (``pytestmark``) wins; else the heaviest of the fixtures it uses (directly or through
    other fixtures) and the ``engine``/``demo`` markers decides.

    Tests that start a process of their own, train or run a real model (torch, a
    ``transformers`` tokenizer or model, an ONNX or sentence-transformers embedder,
    vLLM) or take tens of seconds are ``integration`` by an explicit marker,
    its reason beside it (``pytestmark = pytest.mark.integration  # trains LoRAs``).
    A unit test that starts a process fails (``ProcessGuard``)."""
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


def module_markers(path: Path) -> set[str]:
    """The marker names a test module's own ``pytestmark = ...`` line names (read, not
    imported)."""
    source = path.read_text(encoding="utf-8")
    if "pytestmark" not in source:
        return set()
    names: set[str] = set()
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets
        ):
            for sub in ast.walk(node.value):
                if isinstance(sub, ast.Attribute) and ast.unparse(sub.value) == "pytest.mark":
                    names.add(sub.attr)
    return names


def not_unit_module(path: Path) -> bool:
    """Whether a test module's own ``pytestmark`` makes every test in it integration or
    system (and no test in it is marked ``unit``)."""
    if not (path.name.startswith("test_") and path.suffix == ".py"):
        return False
    if "mark.unit" in path.read_text(encoding="utf-8"):
        return False
    return bool(module_markers(path) & NOT_UNIT_MARKERS)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Under ``-m unit`` a module whose ``pytestmark`` makes every test integration or
    system is not imported at all: all its tests would be deselected, and importing it
    can cost seconds (vLLM, torch)."""
    if config.getoption("markexpr") == "unit" and not_unit_module(collection_path):
        return True
    return None


class UnitTestStartedProcessError(RuntimeError):
    """A unit test (or a fixture it set up) started a process."""


PROCESS_EVENTS = frozenset({"subprocess.Popen", "os.fork", "os.forkpty", "os.posix_spawn"})
"""Audit events of starting a process: ``subprocess``, ``asyncio`` subprocesses, fork.
(``multiprocessing``'s spawn and forkserver start methods raise none in CPython 3.11.)"""


def stdlib_probe(args: tuple[object, ...]) -> bool:
    """``platform.architecture()`` asks ``file -b`` about the interpreter (vLLM's first
    import does): the standard library's own probe, not a process the test starts."""
    argv = args[1] if len(args) > 1 else None
    return isinstance(argv, list) and argv[:2] == ["file", "-b"]


class ProcessGuard:
    """An audit hook refusing to start a process while a unit test is set up or runs:
    such a test belongs in ``integration`` (mark it, with the reason)."""

    def __init__(self) -> None:
        self.unit_test: str | None = None

    def __call__(self, event: str, args: tuple[object, ...]) -> None:
        if self.unit_test is not None and event in PROCESS_EVENTS and not stdlib_probe(args):
            raise UnitTestStartedProcessError(
                f"{self.unit_test} is a unit test but started a process ({event}): mark "
                "it integration (tests/conftest.py, docs/testing.md)"
            )


PROCESS_GUARD = ProcessGuard()
sys.addaudithook(PROCESS_GUARD)


@contextmanager
def guarded(item: pytest.Item) -> Iterator[None]:
    PROCESS_GUARD.unit_test = item.nodeid if item.get_closest_marker("unit") else None
    try:
        yield
    finally:
        PROCESS_GUARD.unit_test = None


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with guarded(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with guarded(item):
        return (yield)


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
