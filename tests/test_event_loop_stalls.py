"""Large prompts never freeze the event loop for other clients: they are tokenized in a
worker thread by a call that releases the GIL, and a prompt whose characters cannot fit
the context is refused before it is tokenized at all. Real uvicorn, fake engine."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeKit, fake_settings
from tests.support.engine_fixtures import LiveGateway, free_port, start_gateway, stop_gateway
from tests.support.fakes import FakeEngine

PROMPT = " ".join(f"word{i % 5000} and some more text" for i in range(70_000))  # ~1.9 MB


@pytest.fixture
def served(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, request: pytest.FixtureRequest
) -> Iterator[LiveGateway]:
    settings = fake_settings(
        fake_kit, tmp_path / "registry", server={"host": "127.0.0.1", "port": free_port()}
    )
    engine = FakeEngine(max_model_len=request.param, reply_words=2)
    app = create_app(settings, engine_factory=lambda _: engine, renderer=renderer)
    live = start_gateway(settings, app=app, ready_timeout=60)
    yield live
    stop_gateway(live)


def health_during_large_prompts(live: LiveGateway, count: int) -> tuple[float, list[int]]:
    """The slowest /health answer while ``count`` large prompts are being handled."""
    statuses: list[int] = []

    # Encoded once: the senders share this process (and its GIL) with the server.
    body = json.dumps(
        {"model": "tiny-base", "messages": [{"role": "user", "content": PROMPT}]}
    ).encode()
    headers = {"Content-Type": "application/json"}

    def send() -> None:
        r = httpx.post(
            live.base_url + "/v1/chat/completions", content=body, headers=headers, timeout=120
        )
        statuses.append(r.status_code)

    senders = [threading.Thread(target=send) for _ in range(count)]
    for t in senders:
        t.start()
    slowest = 0.0
    with httpx.Client(base_url=live.base_url, timeout=30) as client:
        while any(t.is_alive() for t in senders):
            start = time.perf_counter()
            assert client.get("/health").status_code == 200
            slowest = max(slowest, time.perf_counter() - start)
            time.sleep(0.02)
    for t in senders:
        t.join()
    return slowest, statuses


@pytest.mark.parametrize("served", [131_072], indirect=True)
def test_health_answers_while_large_prompts_are_tokenized(served: LiveGateway) -> None:
    slowest, statuses = health_during_large_prompts(served, 5)
    # Their characters could fit 128k tokens, so each was tokenized (~490k tokens, then
    # refused for length).
    assert statuses == [400] * 5
    # Without encode_batch: 4.4 s on a quiet 2-core box; with it: under 0.5 s there.
    assert slowest < 1.0, f"/health took {slowest:.3f} s"


@pytest.mark.parametrize("served", [256], indirect=True)
def test_a_prompt_that_cannot_fit_is_refused_before_tokenizing(served: LiveGateway) -> None:
    body = {"model": "tiny-base", "messages": [{"role": "user", "content": PROMPT}]}
    start = time.perf_counter()
    r = httpx.post(served.base_url + "/v1/chat/completions", json=body, timeout=60)
    took = time.perf_counter() - start
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "characters" in error["message"]
    assert took < 0.5, f"refusal took {took:.3f} s"
