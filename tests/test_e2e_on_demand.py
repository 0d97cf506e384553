"""End to end, remote mode: the OpenAI SDK asks for an adapter that only the tenant's S3
bucket prefix holds (moto on loopback); the gateway fetches it into its disk cache, the
session's two real vLLM replicas load it from there (the shared path), and the answer
is the adapter's: the same tokens as the same weights registered by an operator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from gateway.adapter_runtime.on_demand import scoped_name
from gateway.settings import Settings
from gateway.settings.keys import generate_key
from loadtests.replica_process import ReplicaProcess
from tests.support.engine_fixtures import LiveGateway, free_port, start_gateway, stop_gateway
from tests.support.modelkit import tiny_llama_dir, write_random_adapter
from tests.support.s3_server import ACCESS_KEY_ENV, BUCKET, SECRET_KEY_ENV, S3Server

pytestmark = pytest.mark.engine

KEY = generate_key()
ADMIN = "fleet-admin-key-0123456789"
PREFIX = f"{uuid.uuid4().hex[:8]}/acme/"
MESSAGES = [{"role": "user", "content": "Say something."}]
CROWD = 16


@pytest.fixture(scope="module")
def fleet_gateway(
    replicas: list[ReplicaProcess],
    tmp_path_factory: pytest.TempPathFactory,
    s3_server: S3Server,
) -> Iterator[tuple[LiveGateway, Path]]:
    kit = tmp_path_factory.mktemp("fleet")
    folder = write_random_adapter(tiny_llama_dir(), kit / "persona", seed=42)
    s3_server.put_folder(folder, f"{PREFIX}persona/")
    crowd = write_random_adapter(tiny_llama_dir(), kit / "crowd", seed=43)
    s3_server.put_folder(crowd, f"{PREFIX}crowd/")
    settings = Settings.load(
        None,
        model={"path": tiny_llama_dir(), "name": "tiny-llama"},
        registry={
            "data_dir": tmp_path_factory.mktemp("fleet-registry"),
            "allowed_roots": [folder.parent],
        },
        admin={"api_key": ADMIN},
        engine={
            "kind": "remote",
            "replicas": [r.url for r in replicas],
            "max_loras": 3,
            "max_lora_rank": 8,
            "health_interval": 1,
            "first_token_timeout": 60,
        },
        server={"host": "127.0.0.1", "port": free_port()},
        tenants={
            "acme": {
                "keys": [{"id": KEY.key_id, "hash": KEY.hash}],
                "models": ["tiny-llama", "persona-registered"],
                "adapter_source": {
                    "kind": "s3",
                    "endpoint": s3_server.endpoint,
                    "bucket": BUCKET,
                    "prefix": PREFIX,
                    "access_key_env": ACCESS_KEY_ENV,
                    "secret_key_env": SECRET_KEY_ENV,
                },
            }
        },
    )
    gateway = start_gateway(settings, ready_timeout=120)
    yield gateway, folder
    stop_gateway(gateway)


def answer(client: OpenAI, model: str) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    assert reply.model == model
    return reply.choices[0].message.content or ""


def test_the_sdk_gets_the_answer_of_an_adapter_fetched_on_its_first_request(
    fleet_gateway: tuple[LiveGateway, Path], s3_server: S3Server
) -> None:
    gateway, folder = fleet_gateway
    client = OpenAI(base_url=gateway.base_url + "/v1", api_key=KEY.key, max_retries=0)
    fetched = answer(client, "persona")
    assert len(s3_server.reads(f"{PREFIX}persona/")) == 3
    registered = httpx.post(
        gateway.base_url + "/admin/adapters",
        json={"name": "persona-registered", "path": str(folder)},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=60,
    )
    assert registered.status_code == 201, registered.text
    assert fetched == answer(client, "persona-registered")
    assert fetched != answer(client, "tiny-llama")
    entry = gateway.state.registry.resolve(scoped_name("acme", "persona"))
    assert entry.path.is_relative_to(gateway.settings.registry.data_dir.resolve())
    resident = gateway.run(gateway.state.engine.residency())
    assert resident.replicas is not None
    assert any(entry.lora_int_id in ids for ids in resident.replicas.values())


def test_concurrent_first_requests_fetch_once_and_get_one_answer(
    fleet_gateway: tuple[LiveGateway, Path],
    s3_server: S3Server,
    replicas: list[ReplicaProcess],
) -> None:
    gateway, _ = fleet_gateway
    client = OpenAI(base_url=gateway.base_url + "/v1", api_key=KEY.key, max_retries=0)
    with ThreadPoolExecutor(max_workers=CROWD) as pool:
        answers = list(pool.map(lambda _: answer(client, "crowd"), range(CROWD)))
    assert len(set(answers)) == 1  # float32 replicas: one adapter, one greedy answer
    assert len(s3_server.reads(f"{PREFIX}crowd/")) == 3  # one list, two files
    (entry,) = gateway.state.registry.entries(scoped_name("acme", "crowd"))
    engine_name = f"{entry.name}@{entry.version}"
    loads = [r.adapter_loads().count(engine_name) for r in replicas]
    assert 1 <= sum(loads) <= len(replicas) and max(loads) == 1  # at most once per replica
