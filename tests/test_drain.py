"""Graceful drain: in process (fake engine, ASGI) and for real (SIGTERM to a real
``loragate serve`` in remote mode in front of a fake replica process)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.state import GatewayState
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.engine_fixtures import free_port
from tests.support.fakes import FakeEngine
from tests.support.sse import parse_sse

REPO = Path(__file__).resolve().parent.parent
CHAT = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def gw(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[FakeGateway]:
    engine = FakeEngine(reply_words=400)
    engine.token_delay = 0.01
    settings = fake_settings(fake_kit, tmp_path / "registry", server={"drain_timeout": 2})
    async with run_fake_gateway(settings, renderer, engine) as gateway:
        yield gateway


async def until(condition: Callable[[], bool], within: float = 5.0) -> None:
    async with asyncio.timeout(within):
        while not condition():  # noqa: ASYNC110 (a plain counter: nothing to wait on)
            await asyncio.sleep(0.005)


def state_of(gw: FakeGateway) -> GatewayState:
    state = gw.app.state.gateway
    assert isinstance(state, GatewayState)
    return state


async def stream_body(gw: FakeGateway, max_tokens: int) -> str:
    payload = {**CHAT, "stream": True, "max_tokens": max_tokens}
    async with gw.client.stream("POST", "/v1/chat/completions", json=payload) as response:
        assert response.status_code == 200
        return (await response.aread()).decode()


async def test_draining_turns_ready_503_and_refuses_new_requests(gw: FakeGateway):
    assert (await gw.client.get("/ready")).status_code == 200
    state_of(gw).pipeline.drain.begin()
    ready = await gw.client.get("/ready")
    assert ready.status_code == 503 and ready.json()["error"]["code"] == "shutting_down"
    assert (await gw.client.get("/health")).status_code == 200  # alive: do not kill it
    refused = await gw.client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 2})
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "shutting_down"
    assert int(refused.headers["Retry-After"]) >= 1
    assert gw.engine.requests == []
    registry = state_of(gw).metrics.registry
    assert (
        registry.get_sample_value("loragate_fair_queue_refusals_total", {"reason": "shutting_down"})
        == 1
    )


async def test_streams_in_flight_finish_within_the_drain(gw: FakeGateway):
    drain = state_of(gw).pipeline.drain
    streams = [asyncio.create_task(stream_body(gw, 30)) for _ in range(3)]
    await until(lambda: drain.active == 3)
    assert await drain.run() is True
    for body in await asyncio.gather(*streams):
        events = parse_sse(body)
        assert events[-1] == "[DONE]"
        assert events[-2]["choices"][0]["finish_reason"] == "length"
        assert not any(isinstance(e, dict) and "error" in e for e in events)


async def test_streams_past_the_drain_timeout_end_with_an_error_event(gw: FakeGateway):
    drain = state_of(gw).pipeline.drain
    drain.timeout = 0.2
    stream = asyncio.create_task(stream_body(gw, 200))  # ~2 s at 10 ms a token
    await until(lambda: drain.active == 1)
    began = time.monotonic()
    assert await drain.run() is False
    assert time.monotonic() - began < 2
    events = parse_sse(await stream)
    assert events[-1] == "[DONE]"
    assert events[-2]["error"]["code"] == "shutting_down"
    assert any("choices" in e for e in events[:-2] if isinstance(e, dict))  # it had begun
    for _ in range(200):  # the engine request is cancelled (closing the stream aborts it)
        if gw.engine.aborted:
            break
        await asyncio.sleep(0.005)
    assert gw.engine.aborted and not gw.engine.running
    assert state_of(gw).pipeline.queue.in_use == 0


async def test_requests_waiting_for_the_engine_are_refused_when_the_drain_begins(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
):
    engine = FakeEngine(reply_words=400)
    engine.token_delay = 0.01
    settings = fake_settings(
        fake_kit,
        tmp_path / "registry",
        server={"drain_timeout": 30},
        admission={"max_concurrency": 1, "max_queue": 8, "max_queue_wait": 30},
    )
    async with run_fake_gateway(settings, renderer, engine) as gw:
        state = state_of(gw)
        queue, drain = state.pipeline.queue, state.pipeline.drain
        stream = asyncio.create_task(stream_body(gw, 40))  # ~0.4 s, holds the one slot
        await until(lambda: queue.in_use == 1)
        queued = [
            asyncio.create_task(gw.client.post("/v1/chat/completions", json=CHAT)) for _ in range(2)
        ]
        await until(lambda: queue.depth == 2)
        began = time.monotonic()
        drain.begin()
        for response in await asyncio.gather(*queued):
            assert response.status_code == 503
            assert response.json()["error"]["code"] == "shutting_down"
            assert int(response.headers["Retry-After"]) >= 1
        assert time.monotonic() - began < 0.3  # at once, not after the stream or a timeout
        assert not stream.done()
        assert await drain.run() is True  # the running stream finishes normally
        events = parse_sse(await stream)
        assert events[-1] == "[DONE]" and events[-2]["choices"][0]["finish_reason"] == "length"
        assert len(engine.requests) == 1 and queue.in_use == 0 and queue.depth == 0


# ---------------------------------------------------------------- real process


def wait_ready(url: str, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the process exited during start-up"
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never became ready")


@pytest.fixture
def replica() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "loadtests.paced_replica", "--port", str(port)),
            *("--token-delay", "0.05", "--tokens", "40"),
        ],
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/health", process, timeout=30)
        yield url
    finally:
        process.kill()
        process.wait()


def remote_config(kit: FakeKit, tmp: Path, replicas: list[str], port: int) -> Path:
    config: dict[str, Any] = {
        "model": {"path": str(kit.base), "name": "tiny-base"},
        "registry": {"data_dir": str(tmp / f"registry-{port}")},
        "engine": {"kind": "remote", "replicas": replicas, "health_interval": 0.5},
        "server": {"host": "127.0.0.1", "port": port, "drain_timeout": 10},
    }
    path = tmp / f"gateway-{port}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_sigterm_drains_a_real_gateway_and_exits_0(fake_kit: FakeKit, tmp_path: Path, replica: str):
    port = free_port()
    config = remote_config(fake_kit, tmp_path, [replica], port)
    log = (tmp_path / "gateway.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(config)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url + "/ready", process)
        lines: list[str] = []
        first = threading.Event()

        def read_stream() -> None:  # ~2 s: 40 tokens at 50 ms
            payload = {**CHAT, "stream": True, "max_tokens": 40}
            with httpx.stream("POST", url + "/v1/chat/completions", json=payload, timeout=30) as r:
                for line in r.iter_lines():
                    if line:
                        lines.append(line)
                        first.set()

        reader = threading.Thread(target=read_stream)
        reader.start()
        assert first.wait(10)
        process.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        ready = httpx.get(url + "/ready", timeout=5)
        assert ready.status_code == 503
        refused = httpx.post(url + "/v1/chat/completions", json=CHAT, timeout=5)
        assert refused.status_code == 503 and "Retry-After" in refused.headers
        assert refused.json()["error"]["code"] == "shutting_down"
        assert process.poll() is None  # still draining the stream
        reader.join(30)
        assert lines[-1] == "data: [DONE]"
        assert all("error" not in json.loads(x[6:]) for x in lines[:-1])
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
