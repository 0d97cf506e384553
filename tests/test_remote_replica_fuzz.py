"""Fuzz: a hostile replica answers ``/v1/completions`` with random events, statuses and
sizes, cut into random pieces; the gateway in front of it (remote mode, the app over
ASGI) answers every request with 200 or a documented error, no traceback, and usage
no larger than what was asked for (``n x max_tokens`` completion tokens)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.engine.remote import RemoteEngine
from gateway.engine.remote.engine import REFUSED_MESSAGE
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.hostile_replica import Answer, HostileReplica, good_events, remote_engine

leaf = st.none() | st.booleans() | st.integers(-3, 1 << 40) | st.floats() | st.text(max_size=12)
anything = st.recursive(
    leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
counts = st.integers(0, 12) | st.integers(-1, 1 << 40) | anything
token_ids = st.one_of(
    st.lists(st.integers(0, 60_000), min_size=1, max_size=3),
    st.lists(st.integers(0, 60_000), min_size=1, max_size=3),
    st.sampled_from([6, 6, 6, 200_000]).map(lambda k: [7] * k),
)


def mostly(good: st.SearchStrategy[Any], weight: int = 3) -> st.SearchStrategy[Any]:
    """``good`` ``weight`` times in ``weight + 1``, else anything at all."""
    return st.one_of(*[good] * weight, anything)


choices = st.fixed_dictionaries(
    {
        "index": mostly(st.integers(0, 3)),
        "text": mostly(st.text(max_size=16)),
        "token_ids": mostly(token_ids),
    },
    optional={
        "finish_reason": mostly(st.sampled_from([None, "stop", "length", "abort", "because"])),
        "logprobs": anything,
    },
)
usages = st.fixed_dictionaries(
    {},
    optional={
        "prompt_tokens": counts,
        "completion_tokens": counts,
        "total_tokens": counts,
        "prompt_tokens_details": mostly(
            st.fixed_dictionaries({}, optional={"cached_tokens": counts})
        ),
    },
)
errors = st.fixed_dictionaries(
    {"message": st.text(max_size=20), "code": st.sampled_from([400, 404, 500, "x", None])}
)
events = st.one_of(
    *[st.fixed_dictionaries({"choices": mostly(st.lists(choices, max_size=3))})] * 4,
    st.fixed_dictionaries({"choices": st.just([]), "usage": mostly(usages)}),
    st.fixed_dictionaries({"error": mostly(errors)}),
)
event_lines = events.map(lambda e: f"data: {json.dumps(e)}\n\n".encode())
lines = (
    st.one_of(event_lines, event_lines, event_lines, event_lines)
    | st.binary(max_size=40)
    | st.sampled_from([b"data: [DONE]\n\n", b": comment\n", b"data: {", b"\n"])
    | st.sampled_from([1 << 10, 1 << 10, 1 << 10, 2 << 20]).map(lambda k: b"data: " + b"x" * k)
)


@dataclass(frozen=True)
class Script:
    """What the replica answers: ``good`` well-formed events first, then ``lines``."""

    status: int
    good: int
    lines: list[bytes]
    done: bool
    piece: int | None

    def answer(self, body: dict[str, Any]) -> Answer:
        head = [f"data: {json.dumps(e)}\n\n".encode() for e in good_events(body)[: self.good]]
        blob = [*head, *self.lines, *([b"data: [DONE]\n\n"] if self.done else [])]
        if self.piece is not None:
            joined = b"".join(blob)
            size = max(self.piece, len(joined) // 512 + 1)
            blob = [joined[i : i + size] for i in range(0, len(joined), size)]
        return Answer(self.status, blob, "text/event-stream")


scripts = st.builds(
    Script,
    status=st.sampled_from([200] * 6 + [400, 404, 500, 502]),
    good=st.integers(0, 4),
    lines=st.lists(lines, min_size=1, max_size=6),
    done=st.sampled_from([True, True, False]),
    piece=st.sampled_from([None, 1, 7, 4096]),
)


@dataclass(frozen=True)
class Ask:
    n: int
    max_tokens: int
    temperature: float
    stream: bool

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": "tiny-base",
            "prompt": "hello",
            "n": self.n,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
        }
        if self.stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body


asks = st.builds(
    Ask,
    n=st.integers(1, 3),
    max_tokens=st.integers(1, 5),
    temperature=st.sampled_from([0.0, 1.0]),
    stream=st.booleans(),
)


def check_error(error: Any) -> None:
    assert set(error) == {"message", "type", "param", "code"}, error
    if error["type"] == "internal_error":
        assert error["code"] == "engine_error", error
    elif error["type"] == "invalid_request_error":
        assert error["message"] == REFUSED_MESSAGE, error
    else:
        assert error["type"] == "service_unavailable", error


def check(response: httpx.Response, ask: Ask) -> None:
    assert "Traceback" not in response.text
    assert response.status_code in (200, 400, 500, 503), response.text
    if response.status_code != 200:
        check_error(response.json()["error"])
        return
    budget = ask.n * ask.max_tokens
    if not ask.stream:
        body = response.json()
        assert sorted(c["index"] for c in body["choices"]) == list(range(ask.n))
        assert body["usage"]["completion_tokens"] <= budget
        return
    for line in response.text.splitlines():
        if not line.startswith("data:") or line == "data: [DONE]":
            continue
        event = json.loads(line[5:])
        if "error" in event:
            check_error(event["error"])
            continue
        assert all(0 <= c["index"] < ask.n for c in event["choices"]), event
        if event.get("usage"):
            assert event["usage"]["completion_tokens"] <= budget


@pytest.fixture
async def target(
    fake_kit: FakeKit, tmp_path: Path, renderer: Any
) -> AsyncIterator[tuple[HostileReplica, RemoteEngine, FakeGateway]]:
    replica = await HostileReplica.start()
    engine = await remote_engine(replica)
    config = fake_settings(fake_kit, tmp_path / "registry", limits={"max_n": 4})
    try:
        async with run_fake_gateway(config, renderer, engine=engine) as gateway:  # type: ignore[arg-type]
            yield replica, engine, gateway
    finally:
        await engine.shutdown()
        await replica.stop()


async def test_a_hostile_replica_gets_only_documented_errors_and_bounded_usage(
    target: tuple[HostileReplica, RemoteEngine, FakeGateway],
) -> None:
    replica, engine, gateway = target
    loop = asyncio.get_running_loop()
    [member] = engine.pool.replicas.values()

    async def one(script: Script, ask: Ask) -> None:
        member.healthy = True  # a network failure ejects it; every example starts afresh
        replica.completions = script.answer
        response = await gateway.client.post("/v1/completions", json=ask.body())
        check(response, ask)

    @settings(
        max_examples=50,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(script=scripts, ask=asks)
    def fuzz(script: Script, ask: Ask) -> None:
        asyncio.run_coroutine_threadsafe(one(script, ask), loop).result(timeout=60)

    await asyncio.to_thread(fuzz)
