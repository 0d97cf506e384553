"""Fault injection: the in-process vLLM engine dies (its EngineCore process is killed).

Its own gateway (the session's shared one must survive): a stream in flight ends with
an error event and ``[DONE]``, ``/health`` and ``/ready`` answer 503 (the orchestrator
restarts the process), and new requests are refused at once; nothing hangs.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.settings import Settings
from tests.support.engine_fixtures import LiveGateway, free_port, start_gateway, stop_gateway

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def doomed_gateway(
    tiny_kit: tuple[Path, dict[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    base, _ = tiny_kit
    settings = Settings.load(
        None,
        model={"path": base, "name": "tiny-llama"},
        registry={"data_dir": tmp_path_factory.mktemp("doomed-registry")},
        engine={
            "max_model_len": 1024,
            "max_loras": 1,
            "max_lora_rank": 8,
            "kv_cache_gib": 0.25,
            "enforce_eager": True,
        },
        server={"host": "127.0.0.1", "port": free_port()},
    )
    gateway = start_gateway(settings, ready_timeout=1200)  # minutes on a busy 2-core box
    yield gateway
    stop_gateway(gateway)


def engine_core_pids(gateway: LiveGateway) -> list[int]:
    """White-box: the EngineCore processes under the tracking wrapper's AsyncLLM."""
    llm = gateway.state.engine.inner.llm  # type: ignore[attr-defined]
    manager = llm.engine_core.resources.engine_manager
    return [p.pid for p in manager.processes]


def test_a_dead_engine_ends_streams_fails_health_and_refuses_at_once(
    doomed_gateway: LiveGateway,
):
    url = doomed_gateway.base_url
    assert httpx.get(url + "/health", timeout=5).status_code == 200
    lines: list[str] = []
    first = threading.Event()
    ended = threading.Event()

    def read_stream() -> None:
        payload = {
            "model": "tiny-llama",
            "prompt": "count",
            "max_tokens": 900,
            "ignore_eos": True,
            "stream": True,
        }
        try:
            with httpx.stream("POST", url + "/v1/completions", json=payload, timeout=60) as r:
                for line in r.iter_lines():
                    if line:
                        lines.append(line)
                        first.set()
        finally:
            ended.set()

    reader = threading.Thread(target=read_stream, daemon=True)
    reader.start()
    assert first.wait(60), "the stream never started"
    pids = engine_core_pids(doomed_gateway)
    assert pids
    killed_at = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    assert ended.wait(90), f"the stream hung after the engine died: {lines[-3:]}"
    print(f"stream ended {time.monotonic() - killed_at:.1f} s after the kill")
    assert lines[-1] == "data: [DONE]"
    error = json.loads(lines[-2][len("data: ") :])["error"]
    assert error["type"] == "service_unavailable"
    deadline = killed_at + 90
    while httpx.get(url + "/health", timeout=5).status_code != 503:
        assert time.monotonic() < deadline, "/health never failed"
        time.sleep(0.2)
    health = httpx.get(url + "/health", timeout=5)
    assert health.json()["error"]["code"] == "engine_unavailable"
    assert httpx.get(url + "/ready", timeout=5).status_code == 503
    began = time.monotonic()
    refused = httpx.post(
        url + "/v1/completions",
        json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 4},
        timeout=10,
    )
    assert refused.status_code == 503 and time.monotonic() - began < 5
    assert doomed_gateway.state.pipeline.queue.in_use == 0
