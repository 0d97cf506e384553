"""End-to-end tool calling: the OpenAI SDK, LangChain and the OpenAI Agents SDK against
the gateway (uvicorn on loopback) with the real vLLM engine, in-process and remote.

The test model has random weights, so what it writes unconstrained is noise: these
tests check what must hold for any model. ``required`` and named calls come back
valid against the function's schema (the engine's grammar), streamed deltas assemble
to the same calls, ``auto`` never fails (noise comes back as text), and a client's
full tool loop (call, result, answer) runs.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam, ChatCompletionToolParam

from tests.support.engine_fixtures import LiveGateway

pytestmark = pytest.mark.engine

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": SCHEMA,
            "strict": True,
        },
    },
    {
        "type": "function",
        "function": {
            "name": "get_time",
            "parameters": {
                "type": "object",
                "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]}},
                "required": ["zone"],
                "additionalProperties": False,
            },
        },
    },
]
VALIDATORS = {
    t["function"]["name"]: Draft202012Validator(t["function"]["parameters"]) for t in TOOLS
}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Weather in Oslo?"}]


@pytest.fixture
def client(gateway: LiveGateway) -> OpenAI:
    return OpenAI(base_url=gateway.base_url + "/v1", api_key="test-key", max_retries=0)


def assert_valid(name: str, arguments: str) -> dict[str, Any]:
    parsed = json.loads(arguments)
    VALIDATORS[name].validate(parsed)
    return dict(parsed)


@pytest.mark.parametrize("model", ["tiny-llama", "a2"])
def test_named_choice_returns_a_valid_call(client: OpenAI, model: str) -> None:
    reply = client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=60,
        temperature=1.0,
        seed=3,
    )
    (choice,) = reply.choices
    assert choice.finish_reason == "stop"  # as OpenAI: a named call ends with stop
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert_valid("get_weather", call.function.arguments)


def test_required_streams_calls_that_assemble_and_validate(client: OpenAI) -> None:
    for seed in range(3):
        stream = client.chat.completions.create(
            model="tiny-llama",
            messages=MESSAGES,
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            max_tokens=60,
            temperature=1.0,
            seed=seed,
            stream=True,
        )
        calls: dict[int, dict[str, str]] = {}
        reasons = []
        for chunk in stream:
            for choice in chunk.choices:
                reasons.append(choice.finish_reason)
                for delta in choice.delta.tool_calls or []:
                    call = calls.setdefault(delta.index, {"name": "", "arguments": ""})
                    if delta.id:
                        assert not call["name"], "id and name come once, first"
                        assert delta.function and delta.function.name
                        call["name"] = delta.function.name
                    if delta.function and delta.function.arguments:
                        call["arguments"] += delta.function.arguments
        assert reasons[-1] == "tool_calls"
        (call,) = calls.values()
        assert_valid(call["name"], call["arguments"])


def test_auto_never_fails_and_the_tool_loop_runs(client: OpenAI) -> None:
    first = client.chat.completions.create(
        model="a1", messages=MESSAGES, tools=TOOLS, max_tokens=24, temperature=1.0, seed=1
    )
    message = first.choices[0].message
    assert message.content is not None or message.tool_calls
    forced = client.chat.completions.create(
        model="a1",
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=60,
        temperature=0,
    )
    calls = forced.choices[0].message.tool_calls or []
    assert calls
    history: list[ChatCompletionMessageParam] = [
        *MESSAGES,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.function.name, "arguments": c.function.arguments},
                }
                for c in calls
            ],
        },
        *(
            {"role": "tool", "tool_call_id": c.id, "content": "4 degrees, snow"}  # type: ignore[misc]
            for c in calls
        ),
    ]
    answer = client.chat.completions.create(
        model="a1", messages=history, tools=TOOLS, tool_choice="none", max_tokens=8
    )
    assert answer.choices[0].message.content
    assert not answer.choices[0].message.tool_calls


def test_langchain_bind_tools(gateway: LiveGateway) -> None:
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(
        model="tiny-llama",
        base_url=gateway.base_url + "/v1",
        api_key="test-key",  # type: ignore[arg-type]
        max_tokens=60,
        max_retries=0,
    )
    bound = llm.bind_tools(TOOLS, tool_choice="get_weather")
    reply = bound.invoke("Weather in Lima?")
    (call,) = reply.tool_calls  # type: ignore[attr-defined]
    assert call["name"] == "get_weather"
    VALIDATORS["get_weather"].validate(call["args"])


@pytest.mark.parametrize("api", ["chat_completions", "responses"])
def test_agents_sdk_runs_a_function_tool(gateway: LiveGateway, api: str) -> None:
    """An Agents SDK agent with one function tool, on both of the SDK's model classes
    (the Responses model is the SDK's default)."""
    from agents import (
        Agent,
        ModelSettings,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    seen: list[str] = []

    @function_tool
    def get_weather(city: Literal["Paris", "Oslo", "Lima"]) -> str:
        """The weather in a city."""
        seen.append(city)
        return "4 degrees, snow"

    client = AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key="test-key", max_retries=0)
    agent = Agent(
        name="weather",
        instructions="Answer with the weather.",
        model=(
            OpenAIChatCompletionsModel(model="tiny-llama", openai_client=client)
            if api == "chat_completions"
            else OpenAIResponsesModel(model="tiny-llama", openai_client=client)
        ),
        tools=[get_weather],
        model_settings=ModelSettings(tool_choice="required", max_tokens=40, temperature=0),
        # The test model's free text is noise: the tool's answer is the agent's answer.
        tool_use_behavior="stop_on_first_tool",
    )

    async def run() -> object:
        try:
            return (await Runner.run(agent, "Weather in Oslo?", max_turns=4)).final_output
        finally:
            await client.close()  # before the loop closes: no stray async generators

    final_output = asyncio.run(run())
    assert seen and set(seen) <= {"Paris", "Oslo", "Lima"}
    assert final_output == "4 degrees, snow"
