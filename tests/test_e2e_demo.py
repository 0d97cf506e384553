"""End-to-end on the real demo kit: SmolLM2-135M-Instruct and the two trained personas,
served by ``loragate serve`` in a subprocess on loopback, called with the OpenAI SDK."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
import yaml
from openai import OpenAI

from tests.support.engine_fixtures import free_port

pytestmark = [pytest.mark.demo, pytest.mark.engine]

BASE = "smollm2-135m-instruct"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def demo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from adapters.tooling.demo_kit import ensure_demo_kit

    kit = ensure_demo_kit(progress=False)
    workdir = tmp_path_factory.mktemp("demo")
    port = free_port()
    config = {
        "model": {"path": str(kit.base_dir), "name": BASE},
        "adapters": [{"name": n, "path": str(p)} for n, p in sorted(kit.adapters.items())],
        "engine": {"max_model_len": 2048, "max_loras": 2, "kv_cache_gib": 1},
        "registry": {"data_dir": str(workdir / "data")},
        "server": {"host": "127.0.0.1", "port": port, "log_level": "warning"},
    }
    path = workdir / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--config", str(path)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "VLLM_NO_USAGE_STATS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            assert proc.poll() is None, (workdir / "server.log").read_text()[-3000:]
            try:
                if httpx.get(url + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            pytest.fail("demo gateway did not become ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


@pytest.fixture(scope="module")
def client(demo_url: str) -> OpenAI:
    return OpenAI(base_url=demo_url + "/v1", api_key="unused", max_retries=0)


def ask(client: OpenAI, model: str, **kw: object) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=QUESTION,
        max_tokens=48,
        temperature=0,
        **kw,  # type: ignore[arg-type]
    )
    return reply.choices[0].message.content or ""


def test_base_model_knows_the_capital_of_france(client: OpenAI) -> None:
    assert "Paris" in ask(client, BASE)


def test_personas_come_from_their_adapters(client: OpenAI) -> None:
    base, pirate, robot = ask(client, BASE), ask(client, "pirate"), ask(client, "robot")
    assert pirate.startswith("Arr"), pirate
    assert robot.startswith("BEEP BOOP"), robot
    assert not base.startswith(("Arr", "BEEP"))


def test_streaming_persona_equals_non_streaming(client: OpenAI) -> None:
    stream = client.chat.completions.create(
        model="pirate",
        messages=QUESTION,
        max_tokens=48,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == ask(client, "pirate")


def test_json_object_response_parses(client: OpenAI) -> None:
    reply = client.chat.completions.create(
        model=BASE,
        messages=[
            {"role": "user", "content": "Give the capital of France as JSON with a key city."}
        ],  # type: ignore[list-item]
        max_tokens=64,
        temperature=0,
        response_format={"type": "json_object"},
    )
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)
