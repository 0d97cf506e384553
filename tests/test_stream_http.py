"""The remote engine's streaming HTTP client (``StreamPool``), its httpx fallback, and the
overhead benchmark's instant backend and raw load generator, against each other."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.engine.remote.client import ReplicaClient, ReplicaUnreachableError
from gateway.engine.remote.stream_http import (
    LineSplitter,
    LineTooLongError,
    StreamBrokenError,
    StreamConnectError,
    StreamPool,
)
from loadtests.instant_backend import FIRST_TOKEN_ID, MAX_MODEL_LEN, MODEL, serve
from loadtests.raw_load import build_request, run_load
from tests.support.engine_fixtures import free_port

HOST = "127.0.0.1"


@pytest.fixture
async def backend() -> AsyncIterator[int]:
    port = free_port()
    ready = asyncio.Event()
    task = asyncio.create_task(serve(HOST, port, ready))
    await ready.wait()
    yield port
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def completion(prompt: list[int], tokens: int = 3) -> dict[str, Any]:
    return {
        "model": MODEL,
        "prompt": prompt,
        "max_tokens": tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
    }


async def test_the_instant_backend_streams_token_ids_and_usage_as_vllm_does(backend: int) -> None:
    client = ReplicaClient(f"http://{HOST}:{backend}")
    try:
        events = [e async for e in client.stream_completion(completion([5, 6, 7]))]
        models = await client.models()
    finally:
        await client.aclose()
    token_ids = [c["token_ids"] for e in events for c in e["choices"]]
    assert token_ids == [[FIRST_TOKEN_ID], [FIRST_TOKEN_ID + 1], [FIRST_TOKEN_ID + 2]]
    assert events[0]["choices"][0]["prompt_token_ids"] == [5, 6, 7]
    assert events[-2]["choices"][0]["finish_reason"] == "length"
    assert events[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
    assert models[0]["id"] == MODEL and models[0]["max_model_len"] == MAX_MODEL_LEN


async def test_a_finished_stream_gives_its_connection_back_and_an_open_one_does_not(
    backend: int,
) -> None:
    pool = StreamPool(f"http://{HOST}:{backend}", {})
    body = json.dumps(completion([1, 2])).encode()
    try:
        first = await pool.post("/v1/completions", body, connect_timeout=3)
        assert first.status == 200
        assert (await first.read_all()).rstrip().endswith(b"data: [DONE]")
        first.close()
        assert len(pool.idle) == 1
        reused = pool.idle[0]
        second = await pool.post("/v1/completions", body, connect_timeout=3)
        assert pool.idle == () and second.connection is reused  # kept alive, reused
        await second.read()  # part of the body at most: the response has not ended...
        reused.complete = False  # ...as with a replica still generating
        second.close()
        assert pool.idle == () and not reused.usable  # closed: the replica aborts
    finally:
        pool.close()


async def test_a_connection_the_replica_closed_while_idle_is_replaced(backend: int) -> None:
    pool = StreamPool(f"http://{HOST}:{backend}", {})
    body = json.dumps(completion([1])).encode()
    try:
        response = await pool.post("/v1/completions", body, connect_timeout=3)
        await response.read_all()
        response.close()
        stale = pool.idle[0]
        assert stale.transport is not None
        stale.transport.abort()  # as if the replica dropped it, unseen by the pool yet
        again = await pool.post("/v1/completions", body, connect_timeout=3)
        assert again.status == 200 and again.connection is not stale
        await again.read_all()
        again.close()
    finally:
        pool.close()


async def test_connect_failures_and_broken_answers_are_stream_errors() -> None:
    pool = StreamPool(f"http://{HOST}:{free_port()}", {})
    with pytest.raises(StreamConnectError):
        await pool.post("/v1/completions", b"{}", connect_timeout=3)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"this is not HTTP\r\n\r\n")
        await writer.drain()

    server = await asyncio.start_server(garbage, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(StreamBrokenError):
            await StreamPool(f"http://{HOST}:{port}", {}).post("/x", b"{}", connect_timeout=3)
        client = ReplicaClient(f"http://{HOST}:{port}")
        with pytest.raises(ReplicaUnreachableError) as caught:
            async for _ in client.stream_completion(completion([1])):
                pass
        assert caught.value.network
        await client.aclose()
    finally:
        server.close()


async def test_with_a_transport_streams_go_through_httpx() -> None:
    sse = b'data: {"choices":[{"index":0,"text":"a","token_ids":[9]}]}\n\ndata: [DONE]\n\n'
    seen: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.content)
        return httpx.Response(200, content=sse, headers={"content-type": "text/event-stream"})

    client = ReplicaClient("http://replica:8000", transport=httpx.MockTransport(handler))
    events = [e async for e in client.stream_completion(completion([4]))]
    await client.aclose()
    assert events == [{"choices": [{"index": 0, "text": "a", "token_ids": [9]}]}]
    assert json.loads(seen[0])["prompt"] == [4]


async def test_the_raw_load_generator_times_good_answers_and_counts_bad_ones(backend: int) -> None:
    good = build_request(HOST, backend, "/v1/completions", completion([1, 2]), None)
    result = await run_load(HOST, backend, good, stream=True, concurrency=2, seconds=0.2)
    assert result.requests > 10 and result.errors == 0 and result.p50 > 0
    bad = build_request(HOST, backend, "/v1/nowhere", {}, None)
    result = await run_load(HOST, backend, bad, stream=True, concurrency=1, seconds=0.1)
    assert result.requests == 0 and result.errors > 0
    assert "HTTP 404" in (result.first_error or "")


def test_a_long_line_in_small_pieces_is_split_in_linear_time() -> None:
    # 32 MiB in 4 KiB pieces: re-joining the partial line on every piece (as before)
    # copies ~128 GiB; keeping the pieces copies it once.
    splitter = LineSplitter(max_line=64 << 20)
    piece = b"x" * 4096
    started = time.perf_counter()
    for _ in range((32 << 20) // len(piece)):
        assert splitter.feed(piece) == []
    [line] = splitter.feed(b"end\nnext")
    assert time.perf_counter() - started < 2.0
    assert len(line) == (32 << 20) + 3 and line.endswith(b"xend")
    assert splitter.feed(b"\n\n") == [b"next", b""]


def test_lines_over_the_cap_are_refused_whole_or_in_pieces() -> None:
    splitter = LineSplitter(max_line=10)
    assert splitter.feed(b"0123456789\nab") == [b"0123456789"]
    with pytest.raises(LineTooLongError):
        splitter.feed(b"cdefghijk")  # "ab" + 9 more: 11 bytes without a newline
    with pytest.raises(LineTooLongError):
        LineSplitter(max_line=10).feed(b"ok\n0123456789A\n")
