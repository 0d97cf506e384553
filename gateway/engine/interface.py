"""The ``Engine`` protocol and the engine-neutral types that cross it.

Services speak only these types; ``VLLMEngine`` translates them to vLLM's, and the
fake engine in ``tests/`` implements the same protocol for unit tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter as the engine sees it. ``lora_id`` is never reused for other weights.

    ``version`` is the registry version; ``engine_name`` (``name@version``) is what the
    engine keys its caches on, so two versions of one adapter never share an entry.
    """

    name: str
    lora_id: int
    path: str
    version: str | None = None

    @property
    def engine_name(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


@dataclass(frozen=True)
class StructuredOutput:
    """Constrained decoding: ``json_object`` (any JSON object) or a JSON schema."""

    kind: Literal["json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class GenerationParams:
    max_tokens: int
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logprobs: int | None = None
    """Number of top alternatives per token; None: no logprobs at all."""
    structured_output: StructuredOutput | None = None
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    min_tokens: int = 0
    ignore_eos: bool = False


@dataclass(frozen=True)
class GenerationRequest:
    request_id: str
    prompt_token_ids: list[int]
    params: GenerationParams
    adapter: AdapterRef | None = None
    stream: bool = True
    """True: outputs carry deltas as they come; False: one final output."""
    cache_salt: str | None = None


@dataclass(frozen=True)
class TokenLogprob:
    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class ChoiceOutput:
    """New tokens of one choice since the previous output (all of them when final-only)."""

    index: int
    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[TokenLogprob, ...] | None = None
    finish_reason: str | None = None


@dataclass(frozen=True)
class GenerationOutput:
    request_id: str
    choices: list[ChoiceOutput]
    prompt_tokens: int
    finished: bool
    cached_tokens: int = 0
    queue_seconds: float | None = None
    """Time the request waited in the engine's queue (on its final output, when known)."""


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine.

    ``loaded_adapters``: LoRA ids whose weights the engine holds in memory (vLLM's CPU
    cache, ``max_cpu_loras``). ``adapter_slots``: the ids in the batch slots
    (``max_loras``, on the GPU), a subset of them; ``None`` when the engine cannot say.
    """

    unfinished_requests: int
    loaded_adapters: frozenset[int] = field(default_factory=frozenset)
    adapter_slots: frozenset[int] | None = None


@dataclass(frozen=True)
class SchedulerFigures:
    """The engine scheduler's latest figures (cheap, synchronous read)."""

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    adapters_in_batch: int = 0


@runtime_checkable
class Engine(Protocol):
    """What the gateway needs from an inference engine.

    ``generate`` is an async generator: closing it early (client gone) must abort the
    request in the engine.
    """

    max_model_len: int

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]: ...

    async def abort(self, request_id: str) -> None: ...

    async def add_adapter(self, adapter: AdapterRef) -> bool: ...

    async def remove_adapter(self, lora_id: int) -> bool: ...

    async def pin_adapter(self, lora_id: int) -> bool: ...

    async def stats(self) -> EngineStats: ...

    def figures(self) -> SchedulerFigures: ...

    async def check_health(self) -> None: ...

    async def shutdown(self) -> None: ...
