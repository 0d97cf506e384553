"""Chat prompts grounded in retrieved sources.

What a request searches (``plan_for``), the query (``last_user_turn``), where the
sources go (``PromptAssembler``) and how much of them fits (``fit_sources``).

Placement keeps the tenant's policy in charge: the policy's system message comes
first; the sources follow as data, inside the library's template (numbered,
delimited, "not instructions"). A policy whose template has ``{sources}`` places them
itself; otherwise they are a system message of their own after the leading system
messages (merged into the first one if the model's chat template refuses a second).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.errors import InvalidRequestError
from gateway.protocol.chat import ChatCitation, RagOptions
from gateway.serving.prompt_renderer import PromptRenderer
from gateway.tenancy.config import RagPolicyConfig
from gateway.tenancy.policy import Policy
from retrieval import Citation, RetrievedContext, SearchHit, SearchMode, build_context

NO_SOURCES = (
    "No sources were found for this question in the document collection. Say so if you "
    "cannot answer without them."
)
MIN_SOURCE_TOKENS = 32
FIT_ATTEMPTS = 3


@dataclass(frozen=True)
class RagPlan:
    """The collections a chat request searches; None fields take the server defaults."""

    collections: list[str]
    top_k: int | None
    mode: SearchMode | None


def plan_for(request: RagOptions | None, policy: RagPolicyConfig | None) -> RagPlan | None:
    """A policy's retrieval always applies; a request's adds collections and may set
    ``top_k`` and ``mode``. None when neither asks for retrieval."""
    if request is None and policy is None:
        return None
    names = [*(policy.collections if policy else ()), *(request.names() if request else ())]
    top_k = request.top_k if request and request.top_k is not None else None
    mode = request.mode if request and request.mode is not None else None
    if policy is not None:
        top_k = top_k if top_k is not None else policy.top_k
        mode = mode if mode is not None else policy.mode
    return RagPlan(list(dict.fromkeys(names)), top_k, mode)


def last_user_turn(messages: Sequence[dict[str, str]]) -> str:
    """The query: the text of the conversation's last user message ("" if none)."""
    for message in reversed(messages):
        if message["role"] == "user":
            return message["content"].strip()
    return ""


def with_sources(
    messages: list[dict[str, str]], sources: str, *, merge: bool = False
) -> list[dict[str, str]]:
    """``sources`` as a system message right after the leading system messages, or
    (``merge``) appended to the first system message."""
    lead = 0
    while lead < len(messages) and messages[lead]["role"] == "system":
        lead += 1
    if merge and lead:
        first = messages[0]
        merged = {"role": "system", "content": f"{first['content']}\n\n{sources}"}
        return [merged, *messages[1:]]
    return [*messages[:lead], {"role": "system", "content": sources}, *messages[lead:]]


class PromptAssembler:
    """One request's messages under its policy, rendered with or without sources."""

    def __init__(
        self,
        renderer: PromptRenderer,
        policy: Policy,
        messages: list[dict[str, str]],
        *,
        tenant: str,
        model: str,
    ) -> None:
        self.renderer = renderer
        self.policy = policy
        self.messages = messages
        self._tenant = tenant
        self._model = model

    def render(self, sources: str | None = None) -> list[int]:
        """Token ids of the prompt; ``sources`` None: no retrieval for this request."""
        policy = self.policy
        if sources is not None and policy.has_sources_slot:
            system = policy.system_text(tenant=self._tenant, model=self._model, sources=sources)
            return self.renderer.chat(policy.apply_messages(self.messages, system))
        system = policy.system_text(tenant=self._tenant, model=self._model)
        placed = policy.apply_messages(self.messages, system)
        if sources is None:
            return self.renderer.chat(placed)
        try:
            return self.renderer.chat(with_sources(placed, sources))
        except InvalidRequestError:
            if not placed or placed[0]["role"] != "system":
                raise
            return self.renderer.chat(with_sources(placed, sources, merge=True))

    def count(self, text: str) -> int:
        return self.renderer.count(text)


def fit_sources(
    hits: Sequence[SearchHit], prompt: PromptAssembler, *, room: int, context_tokens: int
) -> tuple[list[int], RetrievedContext]:
    """The prompt with as many numbered sources as fit both ``context_tokens`` and
    ``room`` (the tokens the whole prompt may take), and the sources it holds.

    Sources are counted with the model's tokenizer; the rendered prompt is measured
    again, and the budget shrunk by any excess (chat-template tokens, joins).
    """
    empty = RetrievedContext("", [])
    base = prompt.render(NO_SOURCES)
    budget = min(context_tokens, room - len(base) + prompt.count(NO_SOURCES))
    for _ in range(FIT_ATTEMPTS):
        if not hits or budget < MIN_SOURCE_TOKENS:
            break
        context = build_context(
            hits, max_tokens=budget, count=prompt.count, min_source_tokens=MIN_SOURCE_TOKENS
        )
        if not context.citations:
            break
        ids = prompt.render(context.text)
        excess = len(ids) - room
        if excess <= 0:
            return ids, context
        budget -= excess
    return base, empty


def citation_models(citations: Sequence[Citation]) -> list[ChatCitation]:
    return [
        ChatCitation(
            number=c.number,
            title=c.title,
            source=c.source,
            chunk_id=c.chunk_id,
            document_id=c.document_id,
            collection=c.collection,
            score=c.score,
            heading_path=list(c.heading_path),
        )
        for c in citations
    ]
