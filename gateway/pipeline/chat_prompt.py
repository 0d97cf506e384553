"""``ChatPrompt``: one conversation under its tenant's policy, rendered to token ids.

The policy's system text comes first (``Policy.apply_messages`` decides what happens to
the client's own system messages); retrieved sources, when there are any, go where the
policy's template says (``{sources}``) or into the user's turn as data
(``rag.grounding.with_sources``). Blocking: tokenizes; run it in a thread.
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.protocol.chat import ChatCitation
from gateway.rag.grounding import citation_models, fit_sources, with_sources
from gateway.tenancy.policy import Policy
from retrieval import SearchHit


class ChatPrompt:
    def __init__(
        self,
        renderer: PromptRenderer,
        policy: Policy,
        messages: list[dict[str, str]],
        *,
        tenant: str,
        model: str,
        tools: str | None = None,
    ) -> None:
        self._renderer = renderer
        self._policy = policy
        self._messages = messages
        self._tenant = tenant
        self._model = model
        self._tools = tools

    def render(self, sources: str | None = None) -> list[int]:
        """Token ids of the prompt; ``sources`` None: no retrieval for this request."""
        policy = self._policy
        if sources is not None and policy.has_sources_slot:
            system = policy.system_text(tenant=self._tenant, model=self._model, sources=sources)
            return self._render(policy.apply_messages(self._messages, system))
        system = policy.system_text(tenant=self._tenant, model=self._model)
        placed = policy.apply_messages(self._messages, system)
        if sources is not None:
            placed = with_sources(placed, sources)
        return self._render(placed)

    def _render(self, messages: list[dict[str, str]]) -> list[int]:
        """The tools' text after the system text (the policy's stays first), and tool
        results as user turns (``template_messages``)."""
        messages = [{**m, "role": "user"} if m["role"] == "tool" else m for m in messages]
        if self._tools is not None:
            if messages and messages[0]["role"] == "system":
                first = messages[0]
                system = {"role": "system", "content": f"{first['content']}\n\n{self._tools}"}
                messages = [system, *messages[1:]]
            else:
                messages = [{"role": "system", "content": self._tools}, *messages]
        return self._renderer.chat(messages)

    def render_grounded(
        self, hits: Sequence[SearchHit], *, room: int, context_tokens: int
    ) -> tuple[list[int], list[ChatCitation]]:
        """The prompt with as many of ``hits`` as fit, and their citations."""
        ids, context = fit_sources(
            hits, self.render, self._renderer.count, room=room, context_tokens=context_tokens
        )
        return ids, citation_models(context.citations)
