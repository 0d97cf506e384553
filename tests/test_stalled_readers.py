"""A client that stops reading holds nothing it should not: the engine's slot is freed
when the engine is done (the rest waits in the stream's buffer), a client that accepts
no bytes is cut and its request cancelled, and another tenant is served meanwhile.

Real uvicorn on loopback (an in-process ASGI transport has no socket buffers to fill)
with the fake engine; the stalled clients are raw sockets that send a request and never
read a byte.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import generate_key
from tests.conftest import FakeKit, fake_settings
from tests.support.engine_fixtures import LiveGateway, free_port, start_gateway, stop_gateway
from tests.support.fakes import FakeEngine

KEYS = {name: generate_key() for name in ("a", "b")}
BIG = 60_000  # words: ~12 MB of events, more than loopback's socket buffers hold


def tenants() -> dict[str, object]:
    return {
        name: {"keys": [{"id": k.key_id, "hash": k.hash}], "models": ["tiny-base"]}
        for name, k in KEYS.items()
    }


@pytest.fixture
def served(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, request: pytest.FixtureRequest
) -> Iterator[tuple[LiveGateway, FakeEngine]]:
    buffer_bytes, stall = request.param
    settings = fake_settings(
        fake_kit,
        tmp_path / "registry",
        tenants=tenants(),
        server={"host": "127.0.0.1", "port": free_port()},
        admission={"max_concurrency": 2, "headroom": 0, "max_queue_wait": 60},
        limits={"stream_buffer_bytes": buffer_bytes, "client_stall_seconds": stall},
    )
    engine = FakeEngine(max_model_len=200_000, reply_words=BIG)
    app = create_app(settings, engine_factory=lambda _: engine, renderer=renderer)
    live = start_gateway(settings, app=app, ready_timeout=60)
    yield live, engine
    stop_gateway(live)


def stalled_stream(live: LiveGateway, who: str, max_tokens: int) -> socket.socket:
    """A streamed chat request whose sender never reads the answer."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = live.settings.server.host, live.settings.server.port
    sock.connect((host, port))
    body = json.dumps(
        {
            "model": "tiny-base",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": max_tokens,
            "stream": True,
        }
    ).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {KEYS[who].key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def small_chat(live: LiveGateway, who: str) -> httpx.Response:
    return httpx.post(
        live.base_url + "/v1/chat/completions",
        json={
            "model": "tiny-base",
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 2,
        },
        headers={"Authorization": f"Bearer {KEYS[who].key}"},
        timeout=10,
    )


def until(condition: Callable[[], bool], within: float) -> float:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < within, "condition not met in time"
        time.sleep(0.05)
    return time.monotonic() - start


@pytest.mark.parametrize("served", [(64 * 1024 * 1024, 30.0)], indirect=True)
def test_the_engine_slot_is_freed_when_the_engine_is_done(
    served: tuple[LiveGateway, FakeEngine],
) -> None:
    live, engine = served
    stalled = [stalled_stream(live, "a", BIG) for _ in range(2)]  # both engine slots
    try:
        until(lambda: len(engine.requests) == 2, within=10)
        # The engine finishes both although neither client has read its ~12 MB.
        until(lambda: not engine.running, within=30)
        assert not engine.aborted
        assert small_chat(live, "b").status_code == 200
    finally:
        for sock in stalled:
            sock.close()


@pytest.mark.parametrize("served", [(64 * 1024, 1.0)], indirect=True)
def test_a_client_that_accepts_no_bytes_is_cut_and_its_request_cancelled(
    served: tuple[LiveGateway, FakeEngine],
) -> None:
    live, engine = served
    stalled = [stalled_stream(live, "a", BIG) for _ in range(2)]
    try:
        until(lambda: len(engine.requests) == 2, within=10)
        took = until(lambda: len(engine.aborted) == 2, within=30)
        assert took < 20
        assert not engine.running
        for sock in stalled:  # the gateway closed the connection: reading ends
            sock.settimeout(10)
            while sock.recv(1 << 20):
                pass
        assert small_chat(live, "b").status_code == 200
    finally:
        for sock in stalled:
            sock.close()
