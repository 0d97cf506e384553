"""One tenant must not hurt another: a tenant that opens many large streams and never
reads them does not keep another tenant's small request from being answered.

Real uvicorn on loopback with the fake engine; the stalled clients are raw sockets that
send a streamed ``/v1/completions`` request (4 prompts x n=8: 32 sequences) and never
read a byte, eight of them: every engine slot.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import generate_key
from tests.conftest import FakeKit, fake_settings
from tests.support.engine_fixtures import LiveGateway, free_port, start_gateway, stop_gateway
from tests.support.fakes import FakeEngine

pytestmark = pytest.mark.integration  # 8 stalled 3,000-word streams, real uvicorn: 10-20 s

KEYS = {name: generate_key() for name in ("a", "b")}
PROMPTS, N, STREAMS = 4, 8, 8
CAPACITY = PROMPTS * N * STREAMS
WORDS = 3_000  # per sequence: each stream's events outgrow its buffer and the sockets'


@pytest.fixture
def served(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> Iterator[tuple[LiveGateway, FakeEngine]]:
    tenants = {
        name: {"keys": [{"id": k.key_id, "hash": k.hash}], "models": ["tiny-base"]}
        for name, k in KEYS.items()
    }
    settings = fake_settings(
        fake_kit,
        tmp_path / "registry",
        tenants=tenants,
        server={"host": "127.0.0.1", "port": free_port()},
        admission={"max_concurrency": CAPACITY},
        limits={"stream_buffer_bytes": 256 * 1024, "client_stall_seconds": 30.0},
    )
    engine = FakeEngine(max_model_len=100_000, reply_words=WORDS)
    engine.token_delay = 0.001  # a step takes time, as an engine's does
    app = create_app(settings, engine_factory=lambda _: engine, renderer=renderer)
    live = start_gateway(settings, app=app, ready_timeout=60)
    yield live, engine
    stop_gateway(live)


def stalled_completions(live: LiveGateway) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = live.settings.server.host, live.settings.server.port
    sock.connect((host, port))
    body = json.dumps(
        {
            "model": "tiny-base",
            "prompt": [f"prompt {i}" for i in range(PROMPTS)],
            "n": N,
            "max_tokens": WORDS,
            "stream": True,
        }
    ).encode()
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {KEYS['a'].key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def test_a_tenant_stalling_every_slot_does_not_keep_another_from_an_answer(
    served: tuple[LiveGateway, FakeEngine],
) -> None:
    live, engine = served
    queue = live.state.pipeline.queue
    stalled = [stalled_completions(live) for _ in range(STREAMS)]
    try:
        deadline = time.monotonic() + 30
        while queue.in_use < CAPACITY:  # a holds every slot (b, never seen, gets no headroom)
            assert time.monotonic() < deadline, f"only {queue.in_use} slots in use"
            time.sleep(0.05)
        while queue.streams_stalled < STREAMS:  # a's buffers are full: it reads nothing
            assert time.monotonic() < deadline + 60, f"{queue.streams_stalled} stalled"
            time.sleep(0.1)
        started = time.monotonic()
        answer = httpx.post(
            live.base_url + "/v1/chat/completions",
            json={
                "model": "tiny-base",
                "messages": [{"role": "user", "content": "x"}],
                "max_tokens": 2,
            },
            headers={"Authorization": f"Bearer {KEYS['b'].key}"},
            timeout=60,
        )
        took = time.monotonic() - started
        assert answer.status_code == 200, answer.text
        assert took < 60
        # One stalled stream was cut for it (32 slots for b's 1); a keeps the rest, more
        # than its share, as nobody else waits now.
        assert queue.streams_cut == 1
        assert len(engine.aborted) == PROMPTS  # its engine requests, one per prompt
    finally:
        for sock in stalled:
            sock.close()
