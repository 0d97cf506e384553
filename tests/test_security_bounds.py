"""LLM10 unbounded consumption: every sampling field has a bound before the engine.

Out-of-range values are refused with a 400 ``invalid_request_error`` naming the
parameter, and the engine never sees the request. Bounds follow vLLM's own server
(int64 seeds) or what the engine can hold (int32 top_k), plus caps on stop strings and
JSON schemas, whose cost grows with their size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.protocol.common import (
    INT64_MAX,
    INT64_MIN,
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_NODES,
    MAX_STOP_CHARS,
    MAX_STOP_TOTAL_BYTES,
    MAX_TOP_K,
)
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


@pytest.fixture
async def gateway(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[FakeGateway]:
    # Bodies up to 4 MiB, so the field bounds (not the body limit) are what refuses.
    settings = fake_settings(
        fake_kit, tmp_path / "registry", limits={"max_request_bytes": 4 * 1024 * 1024}
    )
    async with run_fake_gateway(settings, renderer) as gw:
        yield gw


def body(path: str, **fields: Any) -> dict[str, Any]:
    if path == CHAT:
        return {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], **fields}
    return {"model": "tiny-base", "prompt": "hi", **fields}


def nested_schema(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


WIDE_SCHEMA = {
    "type": "object",
    "properties": {f"p{i}": {"type": "string"} for i in range(MAX_SCHEMA_NODES // 2)},
}

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    (CHAT, {"seed": 2**80}, "seed"),
    (CHAT, {"seed": INT64_MAX + 1}, "seed"),
    (CHAT, {"seed": INT64_MIN - 1}, "seed"),
    (COMPLETIONS, {"seed": 2**80}, "seed"),
    (CHAT, {"top_k": 10**30}, "top_k"),
    (CHAT, {"top_k": MAX_TOP_K + 1}, "top_k"),
    (CHAT, {"top_k": -2}, "top_k"),
    (COMPLETIONS, {"top_k": 10**30}, "top_k"),
    (CHAT, {"stop": "x" * 1_500_000}, "stop"),
    (COMPLETIONS, {"stop": ["ok", "x" * 1_500_000]}, "stop"),
    (CHAT, {"stop": ["y" * (MAX_STOP_CHARS + 1)]}, "stop"),
    # Four sequences of MAX_STOP_CHARS two-byte characters: within the length cap
    # each, over the byte cap together.
    (CHAT, {"stop": ["é" * MAX_STOP_CHARS] * 4}, "stop"),
    (
        CHAT,
        {"response_format": json_schema(nested_schema(400))},
        "response_format.json_schema.schema",
    ),
    (CHAT, {"response_format": json_schema(WIDE_SCHEMA)}, "response_format.json_schema.schema"),
    (CHAT, {"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    (CHAT, {"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    (COMPLETIONS, {"logprobs": 6}, "logprobs"),
]


@pytest.mark.parametrize(
    ("path", "fields", "param"), REFUSED, ids=[f"{p[1:]}-{k}" for p, _, k in REFUSED]
)
async def test_out_of_bound_values_are_refused_naming_the_param(
    gateway: FakeGateway, path: str, fields: dict[str, Any], param: str
) -> None:
    r = await gateway.client.post(path, json=body(path, **fields))
    assert r.status_code == 400, r.text[:500]
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param, error
    assert len(r.content) < 2048, "the refusal must not echo the oversized value"
    assert gateway.engine.requests == []


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    (CHAT, {"seed": INT64_MAX}),
    (CHAT, {"seed": INT64_MIN}),
    (COMPLETIONS, {"seed": -1}),
    (CHAT, {"top_k": MAX_TOP_K}),
    (CHAT, {"top_k": -1}),
    (CHAT, {"stop": ["z" * MAX_STOP_CHARS] * 4}),
    (COMPLETIONS, {"stop": "\n\n"}),
    (CHAT, {"response_format": json_schema(nested_schema(MAX_SCHEMA_DEPTH // 2 - 1))}),
    (CHAT, {"logprobs": True, "top_logprobs": 20}),
]


@pytest.mark.parametrize(
    ("path", "fields"), ACCEPTED, ids=[f"{p[1:]}-{next(iter(f))}" for p, f in ACCEPTED]
)
async def test_values_at_the_bounds_are_served(
    gateway: FakeGateway, path: str, fields: dict[str, Any]
) -> None:
    r = await gateway.client.post(path, json=body(path, max_tokens=2, **fields))
    assert r.status_code == 200, r.text[:500]
    assert len(gateway.engine.requests) == 1


def test_stop_caps_fit_the_default_number_of_stops() -> None:
    # Four (the default limits.max_stop_sequences) full-length ASCII stops fit the byte cap.
    assert 4 * MAX_STOP_CHARS <= MAX_STOP_TOTAL_BYTES
