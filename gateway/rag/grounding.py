"""Chat prompts grounded in retrieved sources.

What a request searches (``plan_for``), the query (``last_user_turn``), where the
sources go (``with_sources``) and how much of them fits (``fit_sources``).

Placement keeps the tenant's policy in charge: the policy is the only system text; the
sources are data in the user's turn, inside the library's template (numbered,
delimited, "not instructions"). A policy whose template has ``{sources}`` places them
itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.protocol.chat import ChatCitation, RagOptions
from gateway.settings.tenancy import RagPolicyConfig
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


def with_sources(messages: list[dict[str, str]], sources: str) -> list[dict[str, str]]:
    """``sources`` as data in the user's turn, ahead of the question it answers.

    Never as a system message: the tenant's policy stays the only system text, and a
    retrieved document cannot speak with its authority. Placing them inside the last
    user turn keeps the roles alternating, which many chat templates require.
    """
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "user":
            turn = {"role": "user", "content": f"{sources}\n\n{messages[i]['content']}"}
            return [*messages[:i], turn, *messages[i + 1 :]]
    return [*messages, {"role": "user", "content": sources}]


def fit_sources(
    hits: Sequence[SearchHit],
    render: Callable[[str], list[int]],
    count: Callable[[str], int],
    *,
    room: int,
    context_tokens: int,
) -> tuple[list[int], RetrievedContext]:
    """The prompt with as many numbered sources as fit both ``context_tokens`` and
    ``room`` (the tokens the whole prompt may take), and the sources it holds.

    Sources are counted with the model's tokenizer; the rendered prompt is measured
    again, and the budget shrunk by any excess (chat-template tokens, joins).
    """
    empty = RetrievedContext("", [])
    base = render(NO_SOURCES)
    budget = min(context_tokens, room - len(base) + count(NO_SOURCES))
    for _ in range(FIT_ATTEMPTS):
        if not hits or budget < MIN_SOURCE_TOKENS:
            break
        context = build_context(
            hits, max_tokens=budget, count=count, min_source_tokens=MIN_SOURCE_TOKENS
        )
        if not context.citations:
            break
        ids = render(context.text)
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
