"""Function tools on ``/v1/responses``: the chat endpoint's tool calling seen through
Responses items (``function_call`` output items and argument events, ``function_call``
and ``function_call_output`` input items), each body and event against OpenAI's schema."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.fakes import ScriptedEngine
from tests.support.openai_schema import assert_openai_schema

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME = {"type": "function", "name": "get_time", "parameters": {"type": "object"}}
CALL = ['{"name": "get_weather", ', '"parameters": {"city": "Pa', 'ris"}}']


@pytest.fixture
def script() -> list[str]:
    return CALL


@pytest.fixture
async def gw(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, script: list[str]
) -> AsyncIterator[FakeGateway]:
    engine = ScriptedEngine(script, max_model_len=4096)
    async with run_fake_gateway(fake_settings(fake_kit, tmp_path / "r"), renderer, engine) as g:
        yield g


async def create(gw: FakeGateway, **fields: Any) -> Any:
    body = {"model": "tiny-base", "input": "Weather in Paris?", "tools": [WEATHER, TIME], **fields}
    return await gw.client.post("/v1/responses", json=body)


def events_of(text: str) -> list[dict[str, Any]]:
    blocks = [b for b in text.split("\n\n") if b.strip()]
    events = [json.loads(b.split("\ndata: ", 1)[1]) for b in blocks]
    for event in events:
        assert_openai_schema(event, "ResponseStreamEvent")
    return events


async def test_a_call_is_a_function_call_item(gw: FakeGateway) -> None:
    r = await create(gw)
    assert r.status_code == 200, r.text
    body = r.json()
    assert_openai_schema(body, "Response")
    (item,) = body["output"]
    assert item["type"] == "function_call" and item["status"] == "completed"
    assert (item["name"], json.loads(item["arguments"])) == ("get_weather", {"city": "Paris"})
    assert item["call_id"].startswith("call_") and item["id"].startswith("fc_")
    assert [t["name"] for t in body["tools"]] == ["get_weather", "get_time"]


async def test_a_streamed_call_announces_the_item_then_its_arguments(gw: FakeGateway) -> None:
    events = events_of((await create(gw, stream=True)).text)
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert set(kinds[3:-3]) == {"response.function_call_arguments.delta"}
    added, done = events[2]["item"], events[-2]["item"]
    assert (added["status"], added["arguments"], done["status"]) == ("in_progress", "", "completed")
    assert added["id"] == done["id"] and added["call_id"] == done["call_id"]
    args = "".join(e["delta"] for e in events if e["type"].endswith("arguments.delta"))
    assert json.loads(args) == {"city": "Paris"} == json.loads(events[-3]["arguments"])
    assert events[-1]["response"]["output"] == [done]


@pytest.mark.parametrize(
    "script",
    [['[{"name": "get_weather", "parameters": {"ci', 'ty": "Oslo"}}, ',
      '{"name": "get_time", "parameters": {}}]']],
)  # fmt: skip
async def test_required_streams_several_calls_in_order(gw: FakeGateway) -> None:
    events = events_of((await create(gw, stream=True, tool_choice="required")).text)
    so = gw.engine.requests[0].params.structured_output
    assert so is not None and so.kind == "json_schema"
    final = events[-1]["response"]["output"]
    assert [(i["name"], json.loads(i["arguments"])) for i in final] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {}),
    ]
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1]


@pytest.mark.parametrize("script", [["It is ", "sunny."]])
async def test_text_when_the_model_answers_without_calling(gw: FakeGateway) -> None:
    events = events_of((await create(gw, stream=True)).text)
    final = events[-1]["response"]
    assert final["output"][0]["type"] == "message"
    assert final["output"][0]["content"][0]["text"] == "It is sunny."


async def test_named_tool_choice_is_the_flat_responses_form(gw: FakeGateway) -> None:
    r = await create(gw, tool_choice={"type": "function", "name": "get_weather"})
    assert r.status_code == 200, r.text
    assert r.json()["tool_choice"] == {"type": "function", "name": "get_weather"}
    so = gw.engine.requests[0].params.structured_output
    assert so is not None and so.json_schema is not None and so.json_schema["maxItems"] == 1


async def test_results_continue_the_chain_as_chat_renders_them(gw: FakeGateway) -> None:
    first = (await create(gw)).json()
    call = first["output"][0]
    result = {"type": "function_call_output", "call_id": call["call_id"], "output": "18 C"}
    second = await create(gw, input=[result], previous_response_id=first["id"])
    assert second.status_code == 200, second.text
    # The same conversation sent to chat completions renders the same prompt.
    tool_call = {
        "id": call["call_id"],
        "type": "function",
        "function": {"name": "get_weather", "arguments": call["arguments"]},
    }
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": call["call_id"], "content": "18 C"},
    ]
    tools = [{"type": "function", "function": {k: v for k, v in t.items() if k != "type"}}
             for t in (WEATHER, TIME)]  # fmt: skip
    chat = await gw.client.post(
        "/v1/chat/completions", json={"model": "tiny-base", "messages": messages, "tools": tools}
    )
    assert chat.status_code == 200, chat.text
    assert gw.engine.requests[1].prompt_token_ids == gw.engine.requests[2].prompt_token_ids
    # Items given inline (no chain) render the same again.
    inline = [{"role": "user", "content": "Weather in Paris?"}, call, result]
    assert (await create(gw, input=inline)).status_code == 200
    assert gw.engine.requests[3].prompt_token_ids == gw.engine.requests[1].prompt_token_ids


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [{**WEATHER, "parameters": {"type": 7}}]}, "tools[0].parameters"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].name"),
        ({"tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type"),
        ({"input": [{"type": "function_call_output", "call_id": "c9", "output": "x"}]},
         "input[0]"),
        ({"input": [{"type": "function_call", "name": "get_weather", "arguments": "{}"}]},
         "input[0].call_id"),
    ],
)  # fmt: skip
async def test_tool_refusals_name_the_responses_parameter(
    gw: FakeGateway, fields: dict[str, Any], param: str
) -> None:
    r = await create(gw, **fields)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"].startswith(param), r.json()
    assert not gw.engine.requests
