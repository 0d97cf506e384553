"""Chat completions over the ASGI app with a fake engine: protocol and error mapping."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeGateway
from tests.support.sse import parse_sse

MESSAGES = [{"role": "user", "content": "Hello"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny-base", "messages": MESSAGES, **fields}


async def test_non_streaming_response_shape_and_usage(
    fake_gateway: FakeGateway, renderer: PromptRenderer
) -> None:
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat(max_tokens=3))
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "tiny-base"
    (choice,) = body["choices"]
    assert choice["message"] == {
        "role": "assistant",
        "content": "base0w0 base0w1 base0w2 ",
        "refusal": None,
    }
    assert choice["finish_reason"] == "length"
    prompt_tokens = len(renderer.chat(MESSAGES))
    assert body["usage"]["prompt_tokens"] == prompt_tokens
    assert body["usage"]["completion_tokens"] == 3
    assert body["usage"]["total_tokens"] == prompt_tokens + 3


async def test_engine_receives_rendered_prompt_and_sampling(
    fake_gateway: FakeGateway, renderer: PromptRenderer
) -> None:
    r = await fake_gateway.client.post(
        "/v1/chat/completions",
        json=chat(
            temperature=0.3,
            top_p=0.9,
            seed=7,
            stop=["x"],
            presence_penalty=0.5,
            frequency_penalty=-0.5,
            max_completion_tokens=5,
            n=2,
        ),
    )
    assert r.status_code == 200, r.text
    (req,) = fake_gateway.engine.requests
    assert req.prompt_token_ids == renderer.chat(MESSAGES)
    p = req.params
    assert (p.temperature, p.top_p, p.seed, p.stop, p.n, p.max_tokens) == (
        0.3,
        0.9,
        7,
        ("x",),
        2,
        5,
    )
    assert (p.presence_penalty, p.frequency_penalty) == (0.5, -0.5)
    assert [c["index"] for c in r.json()["choices"]] == [0, 1]


async def test_default_max_tokens_fills_the_context(
    fake_gateway: FakeGateway, renderer: PromptRenderer
) -> None:
    await fake_gateway.client.post("/v1/chat/completions", json=chat())
    (req,) = fake_gateway.engine.requests
    assert req.params.max_tokens == 256 - len(renderer.chat(MESSAGES))


async def test_adapter_model_routes_to_its_adapter(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.post(
        "/v1/chat/completions", json=chat(model="robot", max_tokens=2)
    )
    assert r.json()["model"] == "robot"
    assert r.json()["choices"][0]["message"]["content"].startswith("robot0w0")
    adapters = [req.adapter for req in fake_gateway.engine.requests]
    assert adapters[0] is not None and adapters[0].name == "robot" and adapters[0].lora_id == 2


async def test_stream_framing_as_openai_sends_it(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat(stream=True, max_tokens=3))
    assert r.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert content == "base0w0 base0w1 base0w2 "
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    assert all("usage" not in c for c in chunks)


async def test_stream_include_usage_sends_final_usage_chunk(
    fake_gateway: FakeGateway, renderer: PromptRenderer
) -> None:
    r = await fake_gateway.client.post(
        "/v1/chat/completions",
        json=chat(stream=True, max_tokens=4, stream_options={"include_usage": True}),
    )
    events = parse_sse(r.text)
    *chunks, usage_chunk, done = events
    assert done == "[DONE]"
    assert all(c["usage"] is None for c in chunks)
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 4
    assert usage_chunk["usage"]["prompt_tokens"] == len(renderer.chat(MESSAGES))


async def test_stream_with_n_sends_each_choice(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.post(
        "/v1/chat/completions", json=chat(stream=True, n=2, max_tokens=2)
    )
    chunks = parse_sse(r.text)[:-1]
    for i in range(2):
        mine = [c["choices"][0] for c in chunks if c["choices"][0]["index"] == i]
        assert mine[0]["delta"]["role"] == "assistant"
        assert "".join(m["delta"].get("content") or "" for m in mine) == f"base{i}w0 base{i}w1 "
        assert mine[-1]["finish_reason"] == "length"


async def test_logprobs_shape(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.post(
        "/v1/chat/completions", json=chat(max_tokens=2, logprobs=True, top_logprobs=2)
    )
    content = r.json()["choices"][0]["logprobs"]["content"]
    assert len(content) == 2
    assert content[0]["token"] == "base0w0 "
    assert content[0]["bytes"] == list(b"base0w0 ")
    assert [t["token"] for t in content[0]["top_logprobs"]] == ["alt0", "alt1"]
    assert fake_gateway.engine.requests[0].params.logprobs == 2


async def test_json_response_formats_reach_the_engine(fake_gateway: FakeGateway) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    await fake_gateway.client.post(
        "/v1/chat/completions", json=chat(response_format={"type": "json_object"})
    )
    await fake_gateway.client.post(
        "/v1/chat/completions",
        json=chat(
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        ),
    )
    first, second = (r.params.structured_output for r in fake_gateway.engine.requests)
    assert first is not None and first.kind == "json_object"
    assert second is not None and second.json_schema == schema


async def test_developer_role_and_text_parts_are_rendered(
    fake_gateway: FakeGateway, renderer: PromptRenderer
) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}],
        },
    ]
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat(messages=messages))
    assert r.status_code == 200, r.text
    expected = renderer.chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    )
    assert fake_gateway.engine.requests[0].prompt_token_ids == expected


def assert_openai_error(
    r: Any, status: int, param: str | None, code: str | None = None
) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


@pytest.mark.parametrize(
    ("fields", "param", "code"),
    [
        ({"functions": [{"name": "f"}]}, "functions", "unsupported_parameter"),
        ({"logit_bias": {"1": 2}}, "logit_bias", "unsupported_parameter"),
        ({"store": True}, "store", "unsupported_parameter"),
        ({"modalities": ["text", "audio"]}, "modalities", "unsupported_parameter"),
        ({"bogus": 1}, "bogus", "unknown_parameter"),
        ({"n": 5}, "n", None),
        ({"temperature": 3}, "temperature", "invalid_value"),
        ({"max_tokens": 0}, "max_tokens", "invalid_value"),
        ({"max_tokens": 100000}, "max_tokens", "context_length_exceeded"),
        ({"max_completion_tokens": 100000}, "max_completion_tokens", "context_length_exceeded"),
        ({"top_logprobs": 2}, "top_logprobs", None),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop", None),
        ({"stream_options": {"include_usage": True}}, "stream_options", None),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema",
            None,
        ),
        ({"messages": []}, "messages", None),
        (
            {"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]},
            "messages[0].tool_call_id",
            None,
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
                ]
            },
            "messages[0].content[0]",
            None,
        ),
    ],
)
async def test_bad_requests_get_400_naming_the_parameter(
    fake_gateway: FakeGateway, fields: dict[str, Any], param: str, code: str | None
) -> None:
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat(**fields))
    error = assert_openai_error(r, 400, param, code)
    assert error["type"] == "invalid_request_error"
    assert fake_gateway.engine.requests == []


async def test_prompt_longer_than_context_is_refused(fake_gateway: FakeGateway) -> None:
    long = [{"role": "user", "content": "word " * 400}]
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat(messages=long))
    assert_openai_error(r, 400, "messages", "context_length_exceeded")


async def test_unknown_model_is_404_model_not_found(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat(model="nope"))
    assert_openai_error(r, 404, "model", "model_not_found")


async def test_missing_model_and_invalid_json(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.post("/v1/chat/completions", json={"messages": MESSAGES})
    assert_openai_error(r, 400, "model", "missing_required_parameter")
    r = await fake_gateway.client.post(
        "/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert_openai_error(r, 400, None, "invalid_json")


async def test_oversized_body_is_413(fake_gateway: FakeGateway) -> None:
    big = [{"role": "user", "content": "x" * 5000}]
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat(messages=big))
    assert_openai_error(r, 413, None, "request_too_large")

    async def chunks():  # no Content-Length: counted while streaming in
        for _ in range(10):
            yield b"x" * 1000

    r = await fake_gateway.client.post(
        "/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_openai_error(r, 413, None, "request_too_large")
    assert fake_gateway.engine.requests == []


async def test_failure_mid_stream_sends_error_event_then_done(fake_gateway: FakeGateway) -> None:
    fake_gateway.engine.fail_after_tokens = 2
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat(stream=True, max_tokens=6))
    assert r.status_code == 200
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "engine_error"
    assert set(events[-2]["error"]) == {"message", "type", "param", "code"}
    assert (
        "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2])
        == "base0w0 base0w1 "
    )


async def test_failure_before_output_non_streaming_is_500(fake_gateway: FakeGateway) -> None:
    fake_gateway.engine.fail_after_tokens = 0
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat())
    assert_openai_error(r, 500, None, "engine_error")


async def test_vllm_sampling_extensions_reach_the_engine(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.post(
        "/v1/chat/completions",
        json=chat(
            top_k=5, min_p=0.1, repetition_penalty=1.2, ignore_eos=True, min_tokens=2, max_tokens=4
        ),
    )
    assert r.status_code == 200, r.text
    p = fake_gateway.engine.requests[0].params
    assert (p.top_k, p.min_p, p.repetition_penalty, p.ignore_eos, p.min_tokens) == (
        5,
        0.1,
        1.2,
        True,
        2,
    )
    r = await fake_gateway.client.post(
        "/v1/chat/completions", json=chat(min_tokens=9, max_tokens=4)
    )
    assert_openai_error(r, 400, "min_tokens")


async def test_stream_sends_nothing_before_the_first_token(fake_gateway: FakeGateway) -> None:
    """The role chunk rides with the first token (as vLLM and OpenAI send it), so a
    failure before any token is a plain HTTP error, not a 200 stream."""
    fake_gateway.engine.fail_after_tokens = 0
    r = await fake_gateway.client.post("/v1/chat/completions", json=chat(stream=True))
    assert_openai_error(r, 500, None, "engine_error")
    assert not r.headers["content-type"].startswith("text/event-stream")
