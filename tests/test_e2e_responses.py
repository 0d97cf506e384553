"""End-to-end Responses API: the OpenAI SDK's ``client.responses`` (create, stream,
chain, retrieve, input items, delete, function tools) against the gateway (uvicorn on
loopback) with the real vLLM engine, in-process and remote; every raw body and stream
event validated against OpenAI's schema.

The test model has random weights: these tests check what must hold for any model.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest
from jsonschema import Draft202012Validator
from openai import OpenAI

from tests.support.engine_fixtures import LiveGateway
from tests.support.openai_schema import assert_openai_schema

pytestmark = pytest.mark.engine

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo", "Lima"]}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": SCHEMA,
    "strict": True,
}


@pytest.fixture
def client(gateway: LiveGateway) -> OpenAI:
    return OpenAI(base_url=gateway.base_url + "/v1", api_key="test-key", max_retries=0)


def test_create_string_and_items_with_instructions(client: OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="tiny-llama", input="Name three colours.", max_output_tokens=8, temperature=0
    )
    assert_openai_schema(json.loads(raw.text), "Response")
    r = raw.parse()
    assert r.object == "response" and r.model == "tiny-llama" and r.id.startswith("resp_")
    assert r.status == "incomplete" and r.incomplete_details is not None
    assert r.usage is not None and r.usage.output_tokens == 8
    assert r.output_text and r.output[0].type == "message"
    items = client.responses.create(
        model="a2",
        instructions="Answer briefly.",
        input=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {
                "role": "user",
                "content": [{"type": "input_text", "text": "Which colours are in a rainbow?"}],
            },
        ],
        max_output_tokens=6,
    )
    assert items.model == "a2" and items.instructions == "Answer briefly."
    assert items.usage is not None and items.usage.input_tokens > r.usage.input_tokens


def test_stream_events_validate_and_match_the_whole_response(
    client: OpenAI, gateway: LiveGateway
) -> None:
    whole = client.responses.create(
        model="tiny-llama", input="Name three colours.", max_output_tokens=10, temperature=0
    )
    with client.responses.stream(
        model="tiny-llama", input="Name three colours.", max_output_tokens=10, temperature=0
    ) as stream:
        events = list(stream)
    kinds = [event.type for event in events]
    assert kinds[0] == "response.created" and kinds[-1] == "response.incomplete"
    # As OpenAI: the token limit ends the stream with response.incomplete, which the
    # SDK's get_final_response() does not take (it waits for response.completed).
    terminal = events[-1]
    assert terminal.type == "response.incomplete"
    final = terminal.response
    assert "response.output_text.delta" in kinds
    assert final.output_text == whole.output_text
    assert final.usage is not None and final.usage.output_tokens == 10
    # The raw events, as the wire carries them.
    body = {"model": "tiny-llama", "input": "Hi", "max_output_tokens": 6, "stream": True}
    r = httpx.post(f"{gateway.base_url}/v1/responses", json=body, timeout=120)
    raw = [
        json.loads(block.split("\ndata: ", 1)[1]) for block in r.text.split("\n\n") if block.strip()
    ]
    for event in raw:
        assert_openai_schema(event, "ResponseStreamEvent")
    assert [e["sequence_number"] for e in raw] == list(range(len(raw)))


def test_chain_retrieve_input_items_delete(client: OpenAI) -> None:
    first = client.responses.create(
        model="tiny-llama", input="My name is Ada.", max_output_tokens=6
    )
    second = client.responses.create(
        model="tiny-llama",
        input="What is my name?",
        previous_response_id=first.id,
        max_output_tokens=6,
    )
    assert second.previous_response_id == first.id
    assert first.usage is not None and second.usage is not None
    # The earlier turn (its input and output) is in the second prompt.
    assert second.usage.input_tokens > first.usage.input_tokens + first.usage.output_tokens
    got = client.responses.retrieve(first.id)
    assert got.model_dump() == first.model_dump()
    items = client.responses.input_items.list(second.id)
    assert [i.type for i in items.data] == ["message"]
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as refused:
        client.responses.create(
            model="tiny-llama", input="Again?", previous_response_id=first.id, max_output_tokens=4
        )
    assert refused.value.body["param"] == "previous_response_id"  # type: ignore[index]
    client.responses.retrieve(second.id)  # its own record holds the chain


def test_store_false_and_refusals(client: OpenAI) -> None:
    r = client.responses.create(model="tiny-llama", input="Hi", store=False, max_output_tokens=4)
    assert getattr(r, "store", None) is False  # not in the SDK's type, kept as an extra
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(r.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="tiny-llama", input="Hi", background=True)
    assert refused.value.body["param"] == "background"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as refused:
        client.responses.create(model="tiny-llama", input="Hi", tools=[{"type": "web_search"}])
    assert refused.value.body["param"] == "tools[0].type"  # type: ignore[index]


def test_function_tools_required_call_validates_and_streams(client: OpenAI) -> None:
    r = client.responses.create(
        model="tiny-llama",
        input="Weather in Oslo?",
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        max_output_tokens=40,
    )
    (call,) = [item for item in r.output if item.type == "function_call"]
    assert call.name == "get_weather"
    Draft202012Validator(SCHEMA).validate(json.loads(call.arguments))
    with client.responses.stream(
        model="tiny-llama",
        input="Weather in Lima?",
        tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"},
        max_output_tokens=40,
    ) as stream:
        deltas = "".join(
            e.delta for e in stream if e.type == "response.function_call_arguments.delta"
        )
        final = stream.get_final_response()
    (streamed,) = [item for item in final.output if item.type == "function_call"]
    assert json.loads(deltas) == json.loads(streamed.arguments)
    Draft202012Validator(SCHEMA).validate(json.loads(streamed.arguments))
    # The client's loop: the result goes back, chained, and the model answers.
    answer = client.responses.create(
        model="tiny-llama",
        previous_response_id=final.id,
        input=[{"type": "function_call_output", "call_id": streamed.call_id, "output": "18 C"}],
        tools=[WEATHER],
        tool_choice="none",
        max_output_tokens=6,
    )
    assert answer.output[0].type == "message"
