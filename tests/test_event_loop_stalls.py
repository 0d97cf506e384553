"""Large prompts never freeze the event loop for other clients: they are tokenized in a
worker thread by a call that releases the GIL, and a prompt whose characters cannot fit
the context is refused before it is tokenized at all. The app in-process (ASGI), fake
engine, real tokenizer.

Both checks hold on a loaded machine. The stall check compares two wall times taken in
the same run, so load stretches both: the event loop's longest lateness (a heartbeat
task on the app's loop, as another client's request would be) against the time one
prompt takes to render and tokenize. Tokenizing on the loop, or in a thread that holds
the GIL, stalls the loop for most of that time (lateness / render near 1); off the loop
and GIL-free, the loop is late by a few scheduler slices. The refusal check counts
renderings (none), it does not time them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.model_io.model_tokenizer import FolderTokenizer
from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeKit, fake_settings, run_fake_gateway
from tests.support.fakes import FakeEngine

CONTEXT = 4096
"""Tokens the fake engine takes: SmolLM2's longest token is 81 characters, so a prompt
of up to 331,776 characters could fit and is tokenized."""
PROMPT = " ".join(f"word{i % 5000} and some more text" for i in range(11_000))
"""~300k characters, ~96k tokens: tokenized (its characters could fit), then refused
for length. Rendering it takes 0.8-2.2 s on 2 cores at load average 12."""
PROMPTS = 2
"""Sent at once: two worker threads tokenize while the loop must stay responsive."""
STALL_SHARE = 0.5
"""The loop may be late by at most this share of one prompt's render time. Measured on
2 cores at load average 12: 0.04-0.2 off the loop; 0.9-1.0 with a GIL-holding
``encode``; 2 (both renders back to back) rendering on the loop."""
BEAT_S = 0.002


class TimedRenderer(PromptRenderer):
    """The gateway's renderer, recording how long each chat rendering takes (template
    and tokenization, wall clock) and how many there were."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        self.spans: list[float] = []

    def chat(self, messages: list[dict[str, str]]) -> list[int]:
        started = time.perf_counter()
        try:
            return super().chat(messages)
        finally:
            self.spans.append(time.perf_counter() - started)


@pytest.fixture(scope="module")
def timed_renderer(tokenizer_dir: Path) -> TimedRenderer:
    return TimedRenderer(FolderTokenizer.from_dir(tokenizer_dir))


async def heartbeat(beats: list[float]) -> None:
    """Wakes every ``BEAT_S`` on the running loop and records when it woke."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(BEAT_S)
        beats.append(loop.time())


def longest_gap(beats: list[float]) -> float:
    """How late the loop was at worst: the longest time between wake-ups, less the
    heartbeat's own sleep."""
    return max(b - a for a, b in itertools.pairwise(beats)) - BEAT_S


async def loop_lateness_during_large_prompts(
    fake_kit: FakeKit, tmp_path: Path, renderer: TimedRenderer
) -> tuple[float, list[int]]:
    """The loop's longest lateness while ``PROMPTS`` large prompts are handled, and
    their statuses."""
    settings = fake_settings(fake_kit, tmp_path / "registry")
    engine = FakeEngine(max_model_len=CONTEXT, reply_words=2)
    body = json.dumps(
        {"model": "tiny-base", "messages": [{"role": "user", "content": PROMPT}]}
    ).encode()
    headers = {"Content-Type": "application/json"}
    loop = asyncio.get_running_loop()
    async with run_fake_gateway(settings, renderer, engine) as gateway:
        beats = [loop.time()]
        beat = asyncio.create_task(heartbeat(beats))
        try:
            replies = await asyncio.gather(
                *(
                    gateway.client.post("/v1/chat/completions", content=body, headers=headers)
                    for _ in range(PROMPTS)
                )
            )
            beats.append(loop.time())  # a stall lasting to the end counts too
        finally:
            beat.cancel()
    return longest_gap(beats), [r.status_code for r in replies]


async def test_the_loop_keeps_running_while_large_prompts_are_tokenized(
    fake_kit: FakeKit, tmp_path: Path, timed_renderer: TimedRenderer
) -> None:
    for attempt in range(2):  # a second look before failing: one scheduler hiccup is not a stall
        timed_renderer.spans.clear()
        stall, statuses = await loop_lateness_during_large_prompts(
            fake_kit, tmp_path / str(attempt), timed_renderer
        )
        # Their characters could fit, so each was tokenized, then refused for length.
        assert statuses == [400] * PROMPTS
        assert len(timed_renderer.spans) == PROMPTS
        render = min(timed_renderer.spans)
        if stall < STALL_SHARE * render:
            return
    pytest.fail(f"the loop stalled {stall:.3f} s while one prompt rendered in {render:.3f} s")


async def test_a_prompt_that_cannot_fit_is_refused_before_tokenizing(
    fake_kit: FakeKit, tmp_path: Path, timed_renderer: TimedRenderer
) -> None:
    timed_renderer.spans.clear()
    settings = fake_settings(fake_kit, tmp_path / "registry")
    engine = FakeEngine(max_model_len=256, reply_words=2)  # 256 x 81 characters < PROMPT
    body = {"model": "tiny-base", "messages": [{"role": "user", "content": PROMPT}]}
    async with run_fake_gateway(settings, timed_renderer, engine) as gateway:
        r = await gateway.client.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "context_length_exceeded" and error["param"] == "messages"
    assert "characters" in error["message"]
    assert timed_renderer.spans == []  # never rendered, never tokenized
    assert engine.requests == []
