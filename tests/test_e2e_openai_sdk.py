"""End-to-end: the official OpenAI SDK against uvicorn on loopback, in both engine modes.

Every test runs twice: against the gateway with its in-process vLLM engine
(``live_gateway``) and against the gateway in remote mode in front of two vLLM OpenAI
servers (``remote_gateway``, tests/support/remote_fixtures.py). Both serve ``tiny-llama`` and
the adapters ``a1``..``a6``; the SDK must see no difference.
"""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletionMessageParam

from gateway.rag.embeddings import served_embedder_id
from tests.support.engine_fixtures import LiveGateway

pytestmark = pytest.mark.engine

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name three colours."}]


@pytest.fixture
def client(gateway: LiveGateway) -> OpenAI:
    return OpenAI(base_url=gateway.base_url + "/v1", api_key="test-key", max_retries=0)


@pytest.fixture
def aclient(gateway: LiveGateway) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key="test-key", max_retries=0)


def test_sync_chat_with_base_and_adapter(client: OpenAI) -> None:
    base = client.chat.completions.create(
        model="tiny-llama",
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,
    )
    adapted = client.chat.completions.create(
        model="a4",
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,
    )
    assert base.model == "tiny-llama" and adapted.model == "a4"
    assert base.choices[0].message.role == "assistant"
    assert base.choices[0].message.content != adapted.choices[0].message.content
    assert base.usage is not None and base.usage.completion_tokens == 8
    assert base.choices[0].finish_reason == "length"


def test_sync_stream_with_usage_equals_non_streaming(client: OpenAI) -> None:
    plain = client.chat.completions.create(
        model="a5",
        messages=MESSAGES,
        max_tokens=10,
        temperature=0,
    )
    stream = client.chat.completions.create(
        model="a5",
        messages=MESSAGES,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens  # type: ignore[union-attr]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


async def test_async_stream_and_non_stream(aclient: AsyncOpenAI) -> None:
    reply = await aclient.chat.completions.create(
        model="a6",
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
        n=2,
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert reply.choices[0].message.content == reply.choices[1].message.content  # greedy
    stream = await aclient.chat.completions.create(
        model="a6",
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == reply.choices[0].message.content


def test_legacy_completions_and_models(client: OpenAI, gateway: LiveGateway) -> None:
    out = client.completions.create(
        model="a1", prompt=["Once upon", "A long time"], max_tokens=4, temperature=0
    )
    assert [c.index for c in out.choices] == [0, 1]
    assert out.usage is not None and out.usage.completion_tokens == 8
    streamed = client.completions.create(
        model="a1", prompt="Once upon", max_tokens=4, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == out.choices[0].text
    ids = {m.id for m in client.models.list()}
    configured = {gateway.settings.model.served_name, *(a.name for a in gateway.settings.adapters)}
    configured.add(served_embedder_id(gateway.settings.retrieval))  # /v1/embeddings' model
    assert {"tiny-llama", "a1", "a2", "a3", "a4", "a5", "a6"} <= configured
    assert ids == configured
    assert client.models.retrieve("a2").id == "a2"


def test_typed_errors(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        client.chat.completions.create(model="missing", messages=MESSAGES)
    assert not_found.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(
            model="tiny-llama",
            messages=MESSAGES,
            max_tokens=5000,
        )
    assert too_long.value.code == "context_length_exceeded"
    assert too_long.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError) as tools:
        client.chat.completions.create(
            model="tiny-llama",
            messages=MESSAGES,
            tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}],
            tool_choice={"type": "function", "function": {"name": "g"}},
        )
    assert tools.value.param == "tool_choice.function.name"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("missing")


async def test_async_typed_errors(aclient: AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        await aclient.chat.completions.create(
            model="a1",
            messages=MESSAGES,
            n=99,
        )
    assert bad.value.param == "n"
