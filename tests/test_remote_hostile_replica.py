"""A replica is a trust boundary: what a malformed or malicious one can and cannot do.

Each case scripts ``tests.support.hostile_replica.HostileReplica`` and checks that the remote
engine answers with its documented replica errors (``EngineUnavailableError`` 503 before
the first token, ``EngineFailureError`` 500 after it, a generic 400 for a refusal), books
no more tokens than were asked for, reads no more than its caps, never hands a client
the replica's own words, and serves an adapter name only from the registry's copy.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.engine.interface import (
    AdapterRef,
    GenerationOutput,
    GenerationParams,
    GenerationRequest,
)
from gateway.engine.remote import RemoteEngine
from gateway.engine.remote.client import (
    MAX_ANSWER_BYTES,
    MAX_EVENT_BYTES,
    ReplicaClient,
    ReplicaProtocolError,
)
from gateway.errors import EngineFailureError, EngineUnavailableError
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.hostile_replica import Answer, HostileReplica, good_events, remote_engine

SECRET = "/srv/vllm/secret-models on gpu-node-17.internal.corp"


@pytest.fixture
async def hostile() -> AsyncIterator[HostileReplica]:
    replica = await HostileReplica.start()
    yield replica
    await replica.stop()


@pytest.fixture
async def engine(hostile: HostileReplica) -> AsyncIterator[RemoteEngine]:
    remote = await remote_engine(hostile)
    yield remote
    await remote.shutdown()


@pytest.fixture
async def gateway(
    engine: RemoteEngine, fake_kit: FakeKit, tmp_path: Path, renderer: Any
) -> AsyncIterator[FakeGateway]:
    settings = fake_settings(fake_kit, tmp_path / "registry", limits={"max_n": 4})
    async with run_fake_gateway(settings, renderer, engine=engine) as served:  # type: ignore[arg-type]
        yield served


def request(n: int = 1, max_tokens: int = 4, lora: AdapterRef | None = None) -> GenerationRequest:
    return GenerationRequest(
        request_id="req-h",
        prompt_token_ids=[1, 2, 3],
        params=GenerationParams(max_tokens=max_tokens, n=n, temperature=1.0),
        adapter=lora,
    )


async def collect(remote: RemoteEngine, req: GenerationRequest) -> list[GenerationOutput]:
    return [out async for out in remote.generate(req)]


def choice(**fields: Any) -> dict[str, Any]:
    return {"choices": [{"index": 0, "text": "a", "token_ids": [5], **fields}]}


MALFORMED: dict[str, Any] = {
    "choices as a string": {"choices": "zz"},
    "a choice as a string": {"choices": ["zz"]},
    "index as a string": choice(index="zz"),
    "index 7 with n=1": choice(index=7),
    "a negative index": choice(index=-1),
    "index as a bool": choice(index=True),
    "text as a dict": choice(text={"a": 1}),
    "token ids as a string": choice(token_ids="abc"),
    "token ids of strings": choice(token_ids=["a"]),
    "a negative token id": choice(token_ids=[-1]),
    "200,000 token ids": choice(token_ids=list(range(200_000))),
    "an unknown finish reason": choice(finish_reason="because"),
    "a finish reason as a dict": choice(finish_reason={"a": 1}),
    "megabytes of text for one token": choice(text="x" * 200_000),
    "logprobs as a list": choice(logprobs=[1]),
    "logprob tokens as ints": choice(logprobs={"tokens": [1], "token_logprobs": [-1.0]}),
    "a logprob as a string": choice(logprobs={"tokens": ["a"], "token_logprobs": ["x"]}),
    "a NaN logprob": choice(logprobs={"tokens": ["a"], "token_logprobs": [float("nan")]}),
    "top logprobs as strings": choice(
        logprobs={"tokens": ["a"], "token_logprobs": [-1.0], "top_logprobs": [{"a": "b"}]}
    ),
    "usage as a string": {"choices": [], "usage": "lots"},
    "unbounded completion tokens": {"choices": [], "usage": {"completion_tokens": 10**9}},
    "cached tokens beyond the prompt": {
        "choices": [],
        "usage": {"prompt_tokens_details": {"cached_tokens": 10**12}},
    },
    "an event that is a list": "[1, 2]",
    "an unreadable event": "{not json",
    "deeply nested JSON": "[" * 100_000,
}


@pytest.mark.parametrize("event", MALFORMED.values(), ids=MALFORMED.keys())
async def test_a_malformed_first_event_is_the_replica_failure(
    engine: RemoteEngine, hostile: HostileReplica, event: Any
):
    hostile.completions = lambda body: Answer.sse([event])
    with pytest.raises(EngineUnavailableError):
        await collect(engine, request())


async def test_a_malformed_event_mid_stream_is_the_engine_failure(
    engine: RemoteEngine, hostile: HostileReplica
):
    hostile.completions = lambda body: Answer.sse([choice(), choice(index=7)])
    outs: list[GenerationOutput] = []
    with pytest.raises(EngineFailureError):
        async for out in engine.generate(request()):
            outs.append(out)
    assert [c.index for o in outs for c in o.choices] == [0]


async def test_more_tokens_than_max_tokens_across_events_are_refused(
    engine: RemoteEngine, hostile: HostileReplica
):
    hostile.completions = lambda body: Answer.sse([choice(token_ids=[1, 2, 3])] * 2)
    with pytest.raises(EngineFailureError):
        await collect(engine, request(max_tokens=4))
    # Tokens after a choice's end, too (nothing went out yet: its end is held).
    ended = choice(finish_reason="stop")
    hostile.completions = lambda body: Answer.sse([ended, choice()])
    with pytest.raises(EngineUnavailableError):
        await collect(engine, request())


async def test_a_well_formed_stream_is_served_within_its_bounds(
    engine: RemoteEngine, hostile: HostileReplica
):
    outs = await collect(engine, request(n=2, max_tokens=3))
    tokens = [t for o in outs for c in o.choices for t in c.token_ids]
    assert len(tokens) == 6
    assert {c.index for o in outs for c in o.choices} == {0, 1}


# ------------------------------------------------------------ through the app


def completion_body(stream: bool, n: int = 1, max_tokens: int = 4) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "tiny-base",
        "prompt": "hello",
        "n": n,
        "max_tokens": max_tokens,
        "temperature": 1.0,
    }
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def sse_payloads(text: str) -> list[Any]:
    lines = [line[5:].strip() for line in text.splitlines() if line.startswith("data:")]
    return [json.loads(line) for line in lines if line != "[DONE]"]


async def test_index_7_is_neither_a_500_nor_forwarded(
    gateway: FakeGateway, hostile: HostileReplica
):
    hostile.completions = lambda body: Answer.sse([choice(index=7)])
    response = await gateway.client.post("/v1/completions", json=completion_body(False))
    assert response.status_code == 503, response.text
    assert response.json()["error"]["type"] == "service_unavailable"
    hostile.completions = lambda body: Answer.sse([choice(), choice(index=7)])
    response = await gateway.client.post("/v1/completions", json=completion_body(True))
    events = sse_payloads(response.text)
    indexes = [c["index"] for e in events for c in e.get("choices") or ()]
    assert indexes == [0]
    assert events[-1]["error"]["code"] == "engine_error"
    assert "Traceback" not in response.text


async def test_200000_token_ids_book_nothing_beyond_what_was_asked(
    gateway: FakeGateway, hostile: HostileReplica
):
    hostile.completions = lambda body: Answer.sse(
        [choice(token_ids=list(range(200_000)), finish_reason="length")]
    )
    response = await gateway.client.post("/v1/completions", json=completion_body(False))
    assert response.status_code == 503
    hostile.completions = lambda body: Answer.sse(good_events(body))
    response = await gateway.client.post("/v1/completions", json=completion_body(False, n=2))
    assert response.status_code == 200
    assert response.json()["usage"]["completion_tokens"] == 2 * 4


async def test_a_replicas_error_text_reaches_the_log_only(
    gateway: FakeGateway, hostile: HostileReplica, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    long_message = f"failed to read {SECRET}: " + "x" * (4 << 20)
    hostile.completions = lambda body: Answer.json(
        {"error": {"message": long_message, "code": 400}}, 400
    )
    response = await gateway.client.post("/v1/completions", json=completion_body(False))
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "The inference server refused the request."
    assert "gpu-node-17" not in response.text
    assert "gpu-node-17" in caplog.text
    assert max(len(r.getMessage()) for r in caplog.records) < 2_000  # cut, not 4 MiB
    # The same words in an error event, and in a 5xx answer.
    error = {"error": {"message": f"bad request at {SECRET}", "code": 400}}
    hostile.completions = lambda body: Answer.sse([error])
    response = await gateway.client.post("/v1/completions", json=completion_body(True))
    assert "gpu-node-17" not in response.text
    hostile.completions = lambda body: Answer.json({"error": {"message": SECRET}}, 502)
    response = await gateway.client.post("/v1/completions", json=completion_body(False))
    assert response.status_code == 503 and "gpu-node-17" not in response.text


# --------------------------------------------------------------------- sizes


async def test_a_line_that_never_ends_is_cut_at_the_cap_in_linear_time(hostile: HostileReplica):
    piece = b"data: " + b"x" * (64 << 10)
    pieces = [piece] * (MAX_EVENT_BYTES // len(piece) + 2)
    hostile.completions = lambda body: Answer(200, pieces, "text/event-stream")
    client = ReplicaClient(hostile.url)
    started = time.perf_counter()
    try:
        with pytest.raises(ReplicaProtocolError, match="over"):
            async for _ in client.stream_completion({"prompt": [1]}):
                pass
    finally:
        await client.aclose()
    assert time.perf_counter() - started < 3.0


async def test_the_engine_caps_an_event_by_its_prompt(
    engine: RemoteEngine, hostile: HostileReplica, caplog: pytest.LogCaptureFixture
):
    big = choice(text="y" * (2 << 20))  # 2 MiB: over 1 MiB + 12 bytes per prompt token
    hostile.completions = lambda body: Answer.sse([big])
    with pytest.raises(EngineUnavailableError):
        await collect(engine, request())
    assert f"over {(1 << 20) + 3 * 12} bytes" in caplog.text


async def test_an_oversized_models_answer_is_refused_and_ejects(
    engine: RemoteEngine, hostile: HostileReplica
):
    padding = [{"id": f"a{i}", "root": "x" * 1000, "parent": "fake-base"} for i in range(5000)]
    hostile.models = lambda: Answer.json({"data": padding})
    assert len(json.dumps(padding)) > MAX_ANSWER_BYTES
    client = ReplicaClient(hostile.url)
    try:
        with pytest.raises(ReplicaProtocolError):
            await client.models()
    finally:
        await client.aclose()
    await engine.pool.refresh()
    assert engine.pool.healthy() == []


async def test_an_endless_error_body_is_read_only_to_its_cap(hostile: HostileReplica):
    chunk = b"z" * (1 << 20)
    hostile.completions = lambda body: Answer(500, [chunk] * 64, "text/plain")
    client = ReplicaClient(hostile.url)
    started = time.perf_counter()
    try:
        with pytest.raises(Exception, match="HTTP 500") as caught:
            async for _ in client.stream_completion({"prompt": [1]}):
                pass
    finally:
        await client.aclose()
    assert len(str(caught.value)) < 1_000
    assert time.perf_counter() - started < 3.0
    await asyncio.sleep(0.1)
    assert hostile.sent < 16 << 20  # the client stopped reading: 64 MiB never went out


# ------------------------------------------------------------------ adapters


def pirate(path: str = "/registry/pirate/v1") -> AdapterRef:
    return AdapterRef(name="pirate", lora_id=7, path=path, version="v1")


async def test_a_name_registered_from_another_path_is_refused(
    engine: RemoteEngine, hostile: HostileReplica
):
    hostile.adapters["pirate@v1"] = "/tmp/someone-elses-weights"  # pre-registered
    with pytest.raises(ValueError, match="other weights"):
        await engine.load(pirate())
    with pytest.raises(EngineUnavailableError):
        await collect(engine, request(lora=pirate()))
    assert hostile.load_calls == [] and hostile.bodies == []
    # Found by a probe first: still not served.
    await engine.pool.refresh()
    with pytest.raises(EngineUnavailableError):
        await collect(engine, request(lora=pirate()))
    assert hostile.bodies == []
    assert (await engine.residency()).loaded == frozenset()


async def test_a_name_from_the_registrys_copy_is_adopted(
    engine: RemoteEngine, hostile: HostileReplica
):
    hostile.adapters["pirate@v1"] = pirate().path  # another gateway loaded it
    await engine.pool.refresh()
    outs = await collect(engine, request(lora=pirate()))
    assert outs and hostile.load_calls == []
    assert (await engine.residency()).loaded == frozenset({7})


async def test_a_name_replaced_behind_the_gateways_back_is_refused(
    engine: RemoteEngine, hostile: HostileReplica
):
    assert await engine.load(pirate()) is True
    hostile.adapters["pirate@v1"] = "/tmp/swapped"  # unloaded and loaded again by someone
    await engine.pool.refresh()
    with pytest.raises(EngineUnavailableError):
        await collect(engine, request(lora=pirate()))
    assert hostile.bodies == []


async def test_the_hostile_replica_serves_good_streams(hostile: HostileReplica):
    client = ReplicaClient(hostile.url)
    try:
        body = {"prompt": [1], "n": 1, "max_tokens": 2}
        events = [e async for e in client.stream_completion(body)]
    finally:
        await client.aclose()
    assert [c["token_ids"] for e in events for c in e["choices"]] == [[100], [101]]
    await asyncio.sleep(0)


async def test_what_follows_done_is_not_read_forever(hostile: HostileReplica):
    tail = [b"x" * (1 << 20)] * 64
    hostile.completions = lambda body: Answer(
        200, [*Answer.sse(good_events(body)).pieces, *tail], "text/event-stream"
    )
    client = ReplicaClient(hostile.url)
    try:
        body = {"prompt": [1], "n": 1, "max_tokens": 2}
        events = [e async for e in client.stream_completion(body)]
    finally:
        await client.aclose()
    assert len(events) == 3
    await asyncio.sleep(0.1)
    assert hostile.sent < 16 << 20


async def test_a_base_model_answer_without_a_name_or_a_sane_length_is_not_taken(
    hostile: HostileReplica,
):
    bases: list[dict[str, Any]] = [{"max_model_len": 128}, {"id": "b", "max_model_len": 10**30}]
    for base in [*bases, {"id": "b"}]:
        hostile.models = functools.partial(Answer.json, {"data": [{"parent": None, **base}]})
        with pytest.raises(EngineUnavailableError, match="No replica answered"):
            await remote_engine(hostile)
