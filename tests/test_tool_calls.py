"""Tool calling on ``/v1/chat/completions``: definitions checked, the fallback format
rendered, calls read back (whole and streamed), the engine constrained for ``required``
and named calls, policies, and every refusal."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.engine.interface import StructuredOutput
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import generate_key
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.fakes import ScriptedEngine
from tests.support.openai_schema import assert_openai_schema
from tests.support.sse import parse_sse

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}
ASK = [{"role": "user", "content": "Weather in Paris?"}]


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "tiny-base", "messages": ASK, "tools": [WEATHER, TIME], **fields}


async def scripted(
    kit: FakeKit, tmp: Path, renderer: PromptRenderer, script: list[str], **settings: Any
) -> AsyncIterator[FakeGateway]:
    engine = ScriptedEngine(script, max_model_len=4096)
    async with run_fake_gateway(
        fake_settings(kit, tmp / "registry", **settings), renderer, engine
    ) as gw:
        yield gw


@pytest.fixture
def script() -> list[str]:
    return ['{"name": "get_weather", ', '"parameters": {"city": "Pa', 'ris"}}']


@pytest.fixture
async def gw(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, script: list[str]
) -> AsyncIterator[FakeGateway]:
    async for g in scripted(fake_kit, tmp_path, renderer, script):
        yield g


# ---------------------------------------------------------------- auto


async def test_auto_call_comes_back_as_a_tool_call(gw: FakeGateway) -> None:
    r = await gw.client.post("/v1/chat/completions", json=chat())
    assert r.status_code == 200, r.text
    body = r.json()
    assert_openai_schema(body, "CreateChatCompletionResponse")
    (choice,) = body["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    (request,) = gw.engine.requests
    assert request.params.structured_output is None  # auto: the model decides


async def test_tools_reach_the_prompt_in_the_fallback_format(
    gw: FakeGateway, renderer: PromptRenderer
) -> None:
    await gw.client.post("/v1/chat/completions", json=chat())
    prompt = renderer.decode(gw.engine.requests[0].prompt_token_ids)
    assert '{"name": "get_weather", "description": "The weather in a city."' in prompt
    assert '"name": "get_time"' in prompt
    assert prompt.index("get_weather") < prompt.index("Weather in Paris?")
    await gw.client.post("/v1/chat/completions", json=chat(tool_choice="none"))
    assert "get_weather" not in renderer.decode(gw.engine.requests[1].prompt_token_ids)


async def test_streamed_auto_call_announces_id_and_name_then_arguments(gw: FakeGateway) -> None:
    r = await gw.client.post("/v1/chat/completions", json=chat(stream=True))
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    for c in chunks:
        assert_openai_schema(c, "CreateChatCompletionStreamResponse")
    deltas = [c["choices"][0]["delta"] for c in chunks]
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert calls[0]["id"].startswith("call_") and calls[0]["function"]["name"] == "get_weather"
    assert all("id" not in c and "name" not in c["function"] for c in calls[1:])
    args = "".join(c["function"].get("arguments", "") for c in calls)
    assert json.loads(args) == {"city": "Paris"}
    assert not any(d.get("content") for d in deltas)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize(
    "script",
    [
        ["Paris is ", "sunny today."],
        ['{"name": "get_weather", "parameters": {"town": "Paris"}}'],  # strict: not its schema
        ['{"name": "launch_rockets", "parameters": {}}'],  # not a tool
        ['{"name": "get_weather", "parameters": {"city": "Paris"}} and more'],
        ['{"name": "get_weather", "parameters": {"city": '],  # cut short
    ],
)
async def test_anything_but_valid_calls_comes_back_as_text(
    gw: FakeGateway, script: list[str]
) -> None:
    for stream in (False, True):
        r = await gw.client.post("/v1/chat/completions", json=chat(stream=stream))
        assert r.status_code == 200, r.text
        if stream:
            chunks = parse_sse(r.text)[:-1]
            deltas = [c["choices"][0]["delta"] for c in chunks]
            assert not any("tool_calls" in d for d in deltas)
            assert "".join(d.get("content", "") for d in deltas) == "".join(script)
            assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        else:
            (choice,) = r.json()["choices"]
            assert choice["message"]["content"] == "".join(script)
            assert "tool_calls" not in choice["message"]
            assert choice["finish_reason"] == "stop"


@pytest.mark.parametrize("script", [["Plain ", "text ", "streams ", "as it comes."]])
async def test_text_streams_without_waiting_for_the_end(gw: FakeGateway) -> None:
    r = await gw.client.post("/v1/chat/completions", json=chat(stream=True))
    contents = [
        c["choices"][0]["delta"].get("content") for c in parse_sse(r.text)[:-1] if c["choices"]
    ]
    assert [c for c in contents if c] == ["Plain ", "text ", "streams ", "as it comes."]


@pytest.mark.parametrize(
    "script",
    [
        [
            '{"name": "get_weather", "parameters": {"city": "Paris"}}\n{"name": "get_time", ',
            '"parameters": {}}',
        ]
    ],
)
async def test_parallel_calls_and_parallel_tool_calls_false(gw: FakeGateway) -> None:
    body = (await gw.client.post("/v1/chat/completions", json=chat())).json()
    names = [c["function"]["name"] for c in body["choices"][0]["message"]["tool_calls"]]
    assert names == ["get_weather", "get_time"]
    single = await gw.client.post("/v1/chat/completions", json=chat(parallel_tool_calls=False))
    assert "tool_calls" not in single.json()["choices"][0]["message"]


# ---------------------------------------------------------------- required and named


@pytest.mark.parametrize(
    "script",
    [['[{"name": "get_', 'weather", "parameters": ', '{"city": "Pa', 'ris, \\"FR\\""}}', "]"]],
)
async def test_named_choice_constrains_the_engine_and_streams_arguments(gw: FakeGateway) -> None:
    choice = {"type": "function", "function": {"name": "get_weather"}}
    r = await gw.client.post("/v1/chat/completions", json=chat(tool_choice=choice, stream=True))
    (request,) = gw.engine.requests
    so = request.params.structured_output
    assert isinstance(so, StructuredOutput) and so.kind == "json_schema"
    assert so.json_schema is not None
    assert so.json_schema["maxItems"] == 1
    assert so.json_schema["items"]["properties"]["name"] == {"const": "get_weather"}
    assert so.json_schema["items"]["properties"]["parameters"] == WEATHER["function"]["parameters"]
    chunks = parse_sse(r.text)[:-1]
    calls = [
        c["choices"][0]["delta"]["tool_calls"][0]
        for c in chunks
        if c["choices"] and "tool_calls" in c["choices"][0]["delta"]
    ]
    assert calls[0]["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [c["function"]["arguments"] for c in calls[1:]]
    assert len(fragments) >= 2  # the arguments stream as written, not at the end
    assert json.loads("".join(fragments)) == {"city": 'Paris, "FR"'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # OpenAI: stop for a named call


@pytest.mark.parametrize(
    "script",
    [
        [
            '[{"name": "get_weather", "parameters": {"city": "Oslo"}}, ',
            '{"name": "get_time", "parameters": {}}]',
        ]
    ],
)
async def test_required_allows_any_tool_and_several_calls(gw: FakeGateway) -> None:
    r = await gw.client.post("/v1/chat/completions", json=chat(tool_choice="required"))
    (request,) = gw.engine.requests
    schema = request.params.structured_output.json_schema  # type: ignore[union-attr]
    assert "maxItems" not in schema and len(schema["items"]["anyOf"]) == 2
    message = r.json()["choices"][0]["message"]
    assert [json.loads(c["function"]["arguments"]) for c in message["tool_calls"]] == [
        {"city": "Oslo"},
        {},
    ]
    assert r.json()["choices"][0]["finish_reason"] == "tool_calls"


# ---------------------------------------------------------------- conversations


async def test_assistant_calls_and_tool_results_are_rendered(
    gw: FakeGateway, renderer: PromptRenderer
) -> None:
    messages = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18 C and sunny"},
    ]
    r = await gw.client.post("/v1/chat/completions", json=chat(messages=messages))
    assert r.status_code == 200, r.text
    prompt = renderer.decode(gw.engine.requests[0].prompt_token_ids)
    assert '{"name": "get_weather", "parameters": {"city": "Paris"}}' in prompt
    assert "Result of get_weather:\n18 C and sunny" in prompt


# ---------------------------------------------------------------- refusals


def refusal_cases() -> list[tuple[dict[str, Any], str]]:
    bad_schema = {**WEATHER, "function": {**WEATHER["function"], "parameters": {"type": 7}}}
    remote_ref = {
        **WEATHER,
        "function": {**WEATHER["function"], "parameters": {"$ref": "http://evil/x.json"}},
    }
    not_object = {**WEATHER, "function": {**WEATHER["function"], "parameters": {"type": "array"}}}
    unknown = {"type": "function", "function": {"name": "nope"}}
    orphan = [*ASK, {"role": "tool", "tool_call_id": "call_9", "content": "x"}]
    user_calls = [
        {
            "role": "user",
            "content": "hi",
            "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "x", "arguments": "{}"}}
            ],
        }
    ]
    return [
        (chat(tools=[bad_schema]), "tools[0].function.parameters"),
        (chat(tools=[remote_ref]), "tools[0].function.parameters"),
        (chat(tools=[not_object]), "tools[0].function.parameters"),
        (chat(tools=[WEATHER, WEATHER]), "tools[1].function.name"),
        (chat(tool_choice=unknown), "tool_choice.function.name"),
        (chat(tools=None, tool_choice="required"), "tool_choice"),
        (chat(messages=orphan), "messages[1].tool_call_id"),
        (chat(messages=user_calls), "messages[0].tool_calls"),
        (chat(tools=[TIME] * 3), "tools[1].function.name"),
        (chat(functions=[{"name": "x"}]), "functions"),
        (chat(tool_choice="required", response_format={"type": "json_object"}), "response_format"),
        (chat(logprobs=True), "logprobs"),
    ]


@pytest.mark.parametrize(("body", "param"), refusal_cases())
async def test_refusals_name_the_parameter(
    gw: FakeGateway, body: dict[str, Any], param: str
) -> None:
    r = await gw.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param
    assert not gw.engine.requests


async def test_custom_tools_are_refused(gw: FakeGateway) -> None:
    custom = {"type": "custom", "custom": {"name": "x"}}
    r = await gw.client.post("/v1/chat/completions", json=chat(tools=[custom]))
    assert r.status_code == 400
    assert r.json()["error"]["param"].startswith("tools")


async def test_bounds_on_tool_count_and_size(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, script: list[str]
) -> None:
    limits = {"max_tools": 1, "max_tool_definition_bytes": 1024}
    async for gw in scripted(fake_kit, tmp_path, renderer, script, limits=limits):
        many = await gw.client.post("/v1/chat/completions", json=chat())
        assert many.status_code == 400 and many.json()["error"]["param"] == "tools"
        big = {**TIME, "function": {**TIME["function"], "description": "d" * 2000}}
        large = await gw.client.post("/v1/chat/completions", json=chat(tools=[big]))
        assert large.status_code == 400 and "bytes" in large.json()["error"]["message"]


async def test_policy_forbids_or_limits_tools(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, script: list[str]
) -> None:
    keys = {name: generate_key() for name in ("open", "limited", "closed")}
    policies = {
        "open": {},
        "limited": {"tools": {"max_tools": 1, "functions": ["get_time"]}},
        "closed": {"tools": {"allowed": False}},
    }
    tenants = {
        name: {
            "keys": [{"id": keys[name].key_id, "hash": keys[name].hash}],
            "models": ["tiny-base"],
            "policy": policies[name],
        }
        for name in keys
    }
    async for gw in scripted(fake_kit, tmp_path, renderer, script, tenants=tenants):

        async def post(who: str, gw: FakeGateway = gw, **body: Any) -> Any:
            headers = {"Authorization": f"Bearer {keys[who].key}"}
            return await gw.client.post("/v1/chat/completions", json=chat(**body), headers=headers)

        assert (await post("open")).status_code == 200
        closed = await post("closed")
        assert closed.status_code == 400
        assert closed.json()["error"]["code"] == "tools_not_allowed"
        assert (await post("closed", tools=None)).status_code == 200  # plain chat still works
        assert (await post("limited")).json()["error"]["param"] == "tools"
        named = await post("limited", tools=[WEATHER])
        assert named.json()["error"]["param"] == "tools[0].function.name"
        assert (await post("limited", tools=[TIME])).status_code == 200
