"""Every response body, over the ASGI app with a fake engine, validates against OpenAI's
published OpenAPI schemas (``tests/support/openai_schema.py``), and the official SDK's types
still parse it. A key with no value is left out unless the spec types it nullable."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai.types import Completion
from openai.types import Model as SDKModel
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import generate_key
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.openai_schema import (
    COMPLETION_STREAM,
    assert_openai_schema,
    openai_schema_errors,
)
from tests.support.sse import parse_sse

CHAT = "CreateChatCompletionResponse"
CHAT_CHUNK = "CreateChatCompletionStreamResponse"
COMPLETION = "CreateCompletionResponse"
MESSAGES = [{"role": "user", "content": "Hello"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny-base", "messages": MESSAGES, **fields}


def completion(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny-base", "prompt": "Hello", **fields}


async def stream(client: httpx.AsyncClient, path: str, body: dict[str, Any]) -> list[Any]:
    r = await client.post(path, json=body)
    assert r.status_code == 200, r.text
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    return events[:-1]


def test_the_validator_names_the_path_and_the_value() -> None:
    chunk = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"role": None}, "logprobs": None, "finish_reason": None}],
        "usage": None,
        "citations": [],  # unknown keys are allowed
    }
    with pytest.raises(AssertionError, match=r"\$\.choices\[0\]\.delta\.role: null"):
        assert_openai_schema(chunk, CHAT_CHUNK)
    chunk["choices"][0]["delta"] = {}
    assert_openai_schema(chunk, CHAT_CHUNK)
    chunk["usage"] = {"prompt_tokens": "1"}
    assert openai_schema_errors(chunk, CHAT_CHUNK) == [
        '  at $.usage: {"prompt_tokens": "1"} -- \'completion_tokens\' is a required property',
        '  at $.usage: {"prompt_tokens": "1"} -- \'total_tokens\' is a required property',
        "  at $.usage.prompt_tokens: \"1\" -- '1' is not of type 'integer'",
    ]


@pytest.mark.parametrize(
    "fields",
    [{}, {"n": 2}, {"logprobs": True, "top_logprobs": 2}],
    ids=["plain", "n2", "logprobs"],
)
async def test_chat_completion(fake_gateway: FakeGateway, fields: dict[str, Any]) -> None:
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat(max_tokens=3, **fields))
    assert r.status_code == 200, r.text
    body = r.json()
    assert_openai_schema(body, CHAT)
    assert "system_fingerprint" not in body
    assert len(body["choices"]) == fields.get("n", 1)
    for choice in body["choices"]:
        assert (choice["logprobs"] is None) is ("logprobs" not in fields)  # nullable: kept
    ChatCompletion.model_validate(body)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"stream_options": {"include_usage": True}},
        {"n": 2, "logprobs": True, "top_logprobs": 1},
    ],
    ids=["plain", "include_usage", "n2-logprobs"],
)
async def test_chat_stream_every_chunk(fake_gateway: FakeGateway, fields: dict[str, Any]) -> None:
    chunks = await stream(
        fake_gateway.client, "/v1/chat/completions", chat(stream=True, max_tokens=3, **fields)
    )
    for chunk in chunks:
        assert_openai_schema(chunk, CHAT_CHUNK)
        ChatCompletionChunk.model_validate(chunk)
        assert "system_fingerprint" not in chunk
    include_usage = "stream_options" in fields
    if include_usage:
        *chunks, usage_chunk = chunks
        assert usage_chunk["choices"] == [] and usage_chunk["usage"]["total_tokens"] > 0
        assert all(c["usage"] is None for c in chunks)  # nullable: sent as OpenAI sends it
    deltas = [c["choices"][0]["delta"] for c in chunks]
    roles = [d for d in deltas if "role" in d]
    assert roles == [{"role": "assistant", "content": ""}] * fields.get("n", 1)
    assert any("content" in d and "role" not in d for d in deltas)  # content chunks
    finish = [c["choices"][0] for c in chunks if c["choices"][0]["finish_reason"] is not None]
    assert [f["finish_reason"] for f in finish] == ["length"] * fields.get("n", 1)
    assert all(f["delta"] == {} for f in finish)  # as OpenAI sends the finish chunk


async def test_completion(fake_gateway: FakeGateway) -> None:
    for fields in ({}, {"n": 2, "logprobs": 2}):
        r = await fake_gateway.client.post(
            "/v1/completions", json=completion(max_tokens=3, **fields)
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert_openai_schema(body, COMPLETION)
        assert "system_fingerprint" not in body
        Completion.model_validate(body)


@pytest.mark.parametrize("include_usage", [False, True])
async def test_completion_stream_every_chunk(
    fake_gateway: FakeGateway, include_usage: bool
) -> None:
    body = completion(stream=True, max_tokens=3, logprobs=1)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    chunks = await stream(fake_gateway.client, "/v1/completions", body)
    if include_usage:
        *chunks, usage_chunk = chunks
        assert_openai_schema(usage_chunk, COMPLETION)
        assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 3
    for chunk in chunks:
        # finish_reason is null until the choice ends: the spec's one known gap
        # (see COMPLETION_STREAM); everything else is checked as the spec says.
        assert_openai_schema(chunk, COMPLETION_STREAM)
        assert "usage" not in chunk and "system_fingerprint" not in chunk
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_models(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.get("/v1/models")
    assert r.status_code == 200
    assert_openai_schema(r.json(), "ListModelsResponse")
    r = await fake_gateway.client.get("/v1/models/pirate")
    assert r.status_code == 200
    assert_openai_schema(r.json(), "Model")
    SDKModel.model_validate(r.json())


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/v1/chat/completions", chat(temperature=3), 400),
        ("POST", "/v1/chat/completions", chat(bogus=1), 400),
        ("POST", "/v1/completions", {"prompt": "x"}, 400),
        ("POST", "/v1/chat/completions", chat(model="nope"), 404),
        ("GET", "/v1/models/nope", None, 404),
        ("GET", "/v1/nothing", None, 404),
    ],
)
async def test_error_bodies(
    fake_gateway: FakeGateway, method: str, path: str, body: Any, status: int
) -> None:
    r = await fake_gateway.client.request(method, path, json=body)
    assert r.status_code == status, r.text
    assert_openai_schema(r.json(), "ErrorResponse")


async def test_error_event_mid_stream(fake_gateway: FakeGateway) -> None:
    fake_gateway.engine.fail_after_tokens = 2
    events = await stream(
        fake_gateway.client, "/v1/chat/completions", chat(stream=True, max_tokens=6)
    )
    *chunks, error = events
    for chunk in chunks:
        assert_openai_schema(chunk, CHAT_CHUNK)
    assert_openai_schema(error, "ErrorResponse")


@pytest.fixture
async def keyed_gateway(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[FakeGateway]:
    key = generate_key()
    tenants = {"acme": {"keys": [{"id": key.key_id, "hash": key.hash}], "models": ["tiny-base"]}}
    settings = fake_settings(fake_kit, tmp_path / "registry", tenants=tenants)
    async with run_fake_gateway(settings, renderer) as gateway:
        yield gateway


@pytest.mark.parametrize("authorization", [None, "Bearer lg-nobody-xxxx"])
async def test_401_error_body(keyed_gateway: FakeGateway, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    for method, path in (("POST", "/v1/chat/completions"), ("GET", "/v1/models")):
        body = chat() if method == "POST" else None
        r = await keyed_gateway.client.request(method, path, json=body, headers=headers)
        assert r.status_code == 401, r.text
        assert_openai_schema(r.json(), "ErrorResponse")
