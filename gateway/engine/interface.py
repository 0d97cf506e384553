"""The engine seam: ``Generator`` and ``AdapterHost``, and the neutral types that cross it.

An engine kind implements both (``Engine``): the pipeline only generates, the adapter
lifecycle only hosts. ``VLLMEngine`` translates these types to vLLM's in-process API;
the fake engine in ``tests/`` implements the same protocols for unit tests.
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
    """One prompt for the engine. Outputs always carry deltas as they come, even for a
    one-body response: a request cancelled midway is charged what it produced."""

    request_id: str
    prompt_token_ids: list[int]
    params: GenerationParams
    adapter: AdapterRef | None = None
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
    """What the engine produced for one request since its previous output."""

    request_id: str
    choices: list[ChoiceOutput]
    cached_tokens: int = 0
    """Prompt tokens served from the prefix cache (OpenAI's ``cached_tokens``)."""
    schedule_wait_seconds: float | None = None
    """Time from the engine queueing the request to first scheduling it (final output)."""


@dataclass(frozen=True)
class AdapterResidency:
    """Where the engine holds adapters now, by LoRA id.

    ``loaded``: weights in engine memory (vLLM's adapter cache, ``max_cpu_loras``).
    ``slots``: the ids in the batch slots (``max_loras``), a subset of ``loaded``;
    ``None`` when the engine cannot say.
    """

    loaded: frozenset[int] = field(default_factory=frozenset)
    slots: frozenset[int] | None = None
    replicas: dict[str, frozenset[int]] | None = None
    """A pool of replicas: the ids each replica (by URL) holds; None for one engine."""


@dataclass(frozen=True)
class SchedulerFigures:
    """The engine scheduler's latest figures (cheap, synchronous read).

    ``adapters_running``: distinct adapters among the running requests (vLLM's
    ``running_lora_adapters``), which is not the same as slot residency.
    """

    running: int = 0
    waiting: int = 0
    kv_cache_usage: float = 0.0
    adapters_running: int = 0


@runtime_checkable
class Generator(Protocol):
    """Token ids, sampling parameters and an adapter in; token deltas out.

    ``generate`` is an async generator: closing it early (client gone) cancels the
    request in the engine. That is the only way to cancel; there is no separate abort.
    """

    max_model_len: int

    def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]: ...

    def figures(self) -> SchedulerFigures: ...

    async def check_health(self) -> None: ...

    async def shutdown(self) -> None: ...


class AdapterLoadRefused(ValueError):
    """The engine refused an adapter's weights (unreadable path, wrong rank, bad
    tensors): the adapter's fault, not the engine's."""


@runtime_checkable
class AdapterHost(Protocol):
    """Adapter residency in an engine, keyed by ``AdapterRef``.

    ``load`` makes an adapter resident ahead of its first request (engines also load
    on demand) and raises ``AdapterLoadRefused`` when the weights are at fault (any
    other exception is the engine's own failure); ``unload`` forgets it; ``pin`` keeps it
    resident. Each returns whether the engine did it. ``residency`` says which adapters are
    loaded and, where the engine can tell, which sit in its batch slots.
    """

    async def load(self, adapter: AdapterRef) -> bool: ...

    async def unload(self, adapter: AdapterRef) -> bool: ...

    async def pin(self, adapter: AdapterRef) -> bool: ...

    async def residency(self) -> AdapterResidency: ...


@runtime_checkable
class Engine(Generator, AdapterHost, Protocol):
    """An engine kind: a generator that also hosts adapters (in-process vLLM today)."""
