"""``FakeEngine``: the ``Engine`` protocol without a model, for fast unit tests.

Each choice "generates" the words of ``reply`` (default: ``"w0 w1 w2 ..."``), one token
per word, stopping at ``max_tokens`` or at a stop string, so tests can predict text,
token counts and finish reasons exactly. It records every request it received, and
every adapter load / unload / pin, and reports the loaded ids like vLLM's CPU cache
(unbounded here; ``slots`` can be set to report a slot table).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.engine.interface import (
    AdapterRef,
    AdapterResidency,
    ChoiceOutput,
    GenerationOutput,
    GenerationParams,
    GenerationRequest,
    SchedulerFigures,
    TokenLogprob,
)
from gateway.errors import EngineFailureError


@dataclass
class FakeChoice:
    """One choice of a fake request: its words, one token each, and how far it got."""

    index: int
    words: list[str]
    produced: int = 0
    text: str = ""  # kept only when the request has stop strings
    done: bool = False

    def next_token(self, p: GenerationParams) -> ChoiceOutput:
        word = self.words[self.produced] + " "
        self.produced += 1
        stop_hit = next((s for s in p.stop if s in self.text + word), None)
        if stop_hit is not None:
            word = (self.text + word).split(stop_hit)[0][len(self.text) :]
        if p.stop:  # only stop strings need the text so far
            self.text += word
        reason = None
        if stop_hit is not None or self.produced >= len(self.words):
            reason = "stop"
        elif self.produced >= p.max_tokens:
            reason = "length"
        self.done = reason is not None
        logprobs = None
        if p.logprobs is not None:
            top = tuple((f"alt{k}", -1.0 - k) for k in range(p.logprobs))
            logprobs = (TokenLogprob(word, -0.5, top),)
        return ChoiceOutput(self.index, word, (1000 + self.produced,), logprobs, reason)


class FakeEngine:
    def __init__(self, *, max_model_len: int = 256, reply_words: int = 8) -> None:
        self.max_model_len = max_model_len
        self.reply_words = reply_words
        self.requests: list[GenerationRequest] = []
        self.running: set[str] = set()
        self.aborted: list[str] = []
        self.fail_after_tokens: int | None = None
        self.token_delay = 0.0
        self.shut_down = False
        self.healthy = True
        self.added: list[AdapterRef] = []
        self.removed: list[int] = []
        self.pinned: list[int] = []
        self.loaded: set[int] = set()
        self.slots: frozenset[int] | None = None
        self.cached_tokens = 0

    def words(self, request: GenerationRequest, index: int) -> list[str]:
        tag = request.adapter.name if request.adapter else "base"
        return [f"{tag}{index}w{i}" for i in range(self.reply_words)]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        self.requests.append(request)
        self.running.add(request.request_id)
        if request.adapter is not None:  # vLLM loads an adapter a request needs
            self.loaded.add(request.adapter.lora_id)
        p = request.params
        try:
            choices = [FakeChoice(i, self.words(request, i)) for i in range(p.n)]
            step = 0
            while not all(c.done for c in choices):
                if self.fail_after_tokens is not None and step >= self.fail_after_tokens:
                    raise EngineFailureError("fake engine failure")
                if self.token_delay:
                    await asyncio.sleep(self.token_delay)
                else:
                    await asyncio.sleep(0)
                outs = [c.next_token(p) for c in choices if not c.done]
                step += 1
                yield GenerationOutput(request.request_id, outs, self.cached_tokens)
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.append(request.request_id)
            raise
        finally:
            self.running.discard(request.request_id)

    async def load(self, adapter: AdapterRef) -> bool:
        self.added.append(adapter)
        new = adapter.lora_id not in self.loaded
        self.loaded.add(adapter.lora_id)
        return new

    async def unload(self, adapter: AdapterRef) -> bool:
        lora_id = adapter.lora_id
        self.removed.append(lora_id)
        found = lora_id in self.loaded
        self.loaded.discard(lora_id)
        return found

    async def pin(self, adapter: AdapterRef) -> bool:
        lora_id = adapter.lora_id
        if lora_id not in self.loaded:
            raise ValueError(f"Pinning failed. LoRA {lora_id} is not registered.")
        self.pinned.append(lora_id)
        return True

    async def residency(self) -> AdapterResidency:
        return AdapterResidency(loaded=frozenset(self.loaded), slots=self.slots)

    def figures(self) -> SchedulerFigures:
        return SchedulerFigures(running=len(self.running))

    async def check_health(self) -> None:
        if not self.healthy:
            from gateway.errors import EngineUnavailableError

            raise EngineUnavailableError("fake engine is down")

    async def shutdown(self) -> None:
        self.shut_down = True


class ScriptedEngine(FakeEngine):
    """Each choice writes ``script``'s pieces as they are, one token per piece (tool-call
    tests: exact JSON, split where a real engine might split it)."""

    def __init__(self, script: list[str], **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.script = script

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        self.requests.append(request)
        n = request.params.n
        for step, piece in enumerate(self.script):
            await asyncio.sleep(0)
            last = step == len(self.script) - 1
            outs = [
                ChoiceOutput(i, piece, (2000 + step,), None, "stop" if last else None)
                for i in range(n)
            ]
            yield GenerationOutput(request.request_id, outs)
