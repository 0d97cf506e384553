"""``engine.kind: remote`` over two real vLLM OpenAI servers on loopback.

The replicas and the gateway in front of them are session fixtures
(``tests/support/remote_fixtures.py``), shared with the OpenAI-SDK e2e suite's remote mode. At
temperature 0, what comes through the gateway must equal what the same replica
answers directly, adapters must go to their home replica, and a killed replica is
ejected and rejoins.
"""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gateway.engine.remote import RemoteEngine
from gateway.engine.remote.placement import ranking
from gateway.engine.remote.replicas import Replica
from loadtests.replica_process import ReplicaProcess
from tests.support.engine_fixtures import LiveGateway

pytestmark = pytest.mark.engine

PROMPT = [1, 504, 3458, 282, 4618, 314, 260, 1345, 28, 2]


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
    before = {url: r.requests for url, r in engine.pool.replicas.items()}
    for _ in range(4):
        completion(remote_gateway.base_url, "r1", PROMPT, max_tokens=2)
    views = engine.pool.replicas
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


def test_killed_replica_is_ejected_and_rejoins_with_adapters_reloaded(
    remote_gateway: LiveGateway, replicas: list[ReplicaProcess]
) -> None:
    """Last in the file: it restarts a replica."""
    engine = remote_engine(remote_gateway)
    victim = home(remote_gateway, replicas, "r1")
    completion(remote_gateway.base_url, "r1", PROMPT, max_tokens=2)
    loads_before = _view(engine, victim.url).loads
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


def _view(engine: RemoteEngine, url: str) -> Replica:
    return engine.pool.replicas[url]


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
