"""``Endpoint``: what chat and completions supply to the pipeline, and what it hands back.

An endpoint parses nothing and generates nothing: it checks its own fields, builds its
prompt(s) and shapes its response. Everything else (routing, policy, limits, usage,
metrics, disconnects, streaming and error events) is the pipeline's.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from gateway.engine.interface import GenerationOutput, GenerationRequest
from gateway.model_io.generation_params import SamplingFields
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.model_io.usage import usage
from gateway.pipeline.merge import ChoiceAccumulator
from gateway.protocol.chat import ChatCitation
from gateway.protocol.common import Usage
from gateway.rag.grounding import RagPlan
from gateway.settings import LimitSettings
from gateway.tenancy.directory import Route
from gateway.tenancy.gatekeeper import Ticket
from gateway.tenancy.policy import BoundedSampling, Policy, SamplingRequest
from retrieval import SearchHit


@dataclass(frozen=True)
class Rendered:
    """An endpoint's prompts as token ids, and the sources they hold (RAG only)."""

    prompts: list[list[int]]
    echoes: list[str] | None = None
    """Completions with ``echo``: each prompt's text, put before its completions."""
    citations: list[ChatCitation] | None = None


@dataclass(frozen=True)
class RenderInput:
    """What rendering needs besides the request itself."""

    renderer: PromptRenderer
    route: Route
    tenant: str
    hits: Sequence[SearchHit] | None
    """Retrieved chunks to fit into the prompt (None: no retrieval)."""
    room: int
    """Tokens the prompt may take when sources are fitted into it."""
    context_tokens: int
    """Most tokens of sources in one prompt (``retrieval.context_tokens``)."""


@dataclass
class Prepared:
    """An admitted, routed, rendered request: every refusal has happened before it."""

    id: str
    model: str
    """What the response's ``model`` says: the name the client used (alias included)."""
    generations: list[GenerationRequest]
    ticket: Ticket
    rendered: Rendered
    created: int = field(default_factory=lambda: int(time.time()))
    cached_tokens: dict[int, int] = field(default_factory=dict)
    """Prompt tokens served from the prefix cache, per prompt (the engine's latest count)."""

    @property
    def n(self) -> int:
        return self.generations[0].params.n

    def usage(self) -> Usage:
        return usage(
            self.ticket.prompt_tokens,
            self.ticket.completion_tokens,
            sum(self.cached_tokens.values()),
        )


class Endpoint(Protocol):
    """One request of one endpoint (built per request from its body)."""

    name: str
    """``chat`` or ``completions``."""
    id_prefix: str
    model: str | None
    user: str | None
    """The caller's end-user id, if sent: the sticky key of an adapter's traffic split."""
    stream: bool
    max_tokens: int | None
    """The completion budget the client asked for (None: the policy's or the context's)."""
    default_max_tokens: int | None
    """The endpoint's own default when the client names none (OpenAI: 16 for completions)."""
    n: int

    def check(self, limits: LimitSettings) -> None:
        """Refusals that need neither a route nor a tokenizer (cheap; before admission)."""

    def check_route(self, route: Route) -> None:
        """Refusals that depend on the resolved model and its policy."""

    def sampling(self) -> SamplingRequest:
        """The fields a policy may bound."""

    def rag_plan(self, policy: Policy) -> RagPlan | None:
        """The collections to search, or None: no retrieval."""

    def query(self) -> str:
        """What to search for."""

    def render(self, work: RenderInput) -> Rendered:
        """Token ids of the prompt(s). Blocking (tokenization): run in a thread."""

    def sampling_fields(self, bounded: BoundedSampling) -> SamplingFields:
        """The sampling fields for the engine, after the policy bounded them."""

    def prompt_param(self) -> str:
        """The request field errors about the prompt name (``messages`` or ``prompt``)."""

    def prompt_chars(self) -> int:
        """About how much text rendering will tokenize (cheap: no tokenizer)."""

    def longest_prompt_chars(self) -> int:
        """The characters of the longest single prompt's own text (a lower bound of what
        it renders to; cheap)."""

    def response_body(self, prepared: Prepared, outputs: ChoiceAccumulator) -> str:
        """The JSON body of a non-streaming response."""

    def events(
        self, prepared: Prepared, outputs: AsyncIterator[tuple[int, GenerationOutput]]
    ) -> AsyncIterator[str]:
        """The server-sent events of a streaming response, ``[DONE]`` included."""
