"""A ``GenerationRequest`` as vLLM's ``/v1/completions`` body; its SSE events as outputs.

The prompt goes as token ids (the gateway rendered it), so the replica computes exactly
what the in-process engine would. Field names are those of vLLM 0.32's
``CompletionRequest`` (``vllm/entrypoints/openai/completion/protocol.py``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.engine.interface import (
    ChoiceOutput,
    GenerationOutput,
    GenerationRequest,
    TokenLogprob,
)


def greedy_copies(request: GenerationRequest) -> int:
    """vLLM refuses n > 1 with temperature 0; OpenAI answers n identical choices.

    Greedy decoding is deterministic, so one generation copied n times is the same
    answer (as the in-process engine does).
    """
    p = request.params
    return p.n if p.n > 1 and p.temperature == 0 else 1


def completion_body(request: GenerationRequest, model: str) -> dict[str, Any]:
    """The JSON body for ``request`` on a replica serving it under ``model``."""
    p = request.params
    body: dict[str, Any] = {
        "model": model,
        "prompt": list(request.prompt_token_ids),
        "stream": True,
        "stream_options": {"include_usage": True},
        "return_token_ids": True,
        "n": 1 if greedy_copies(request) > 1 else p.n,
        "temperature": p.temperature,
        "top_p": p.top_p,
        "max_tokens": p.max_tokens,
        "stop": list(p.stop),
        "seed": p.seed,
        "presence_penalty": p.presence_penalty,
        "frequency_penalty": p.frequency_penalty,
        "logprobs": p.logprobs,
        "top_k": p.top_k,
        "min_p": p.min_p,
        "repetition_penalty": p.repetition_penalty,
        "min_tokens": p.min_tokens,
        "ignore_eos": p.ignore_eos,
        # The gateway added the template's special tokens when it rendered the prompt.
        "add_special_tokens": False,
        "request_id": request.request_id,
    }
    if request.cache_salt is not None:
        body["cache_salt"] = request.cache_salt
    so = p.structured_output
    if so is not None:
        body["structured_outputs"] = (
            {"json_object": True} if so.kind == "json_object" else {"json": so.json_schema}
        )
    return body


class StreamDecoder:
    """Turns one stream's events into ``GenerationOutput`` deltas.

    Final chunks (those with a ``finish_reason``) are held until the usage event that
    follows them, so the last output carries the prompt tokens the replica served from
    its prefix cache (``usage.prompt_tokens_details.cached_tokens``; vLLM reports it
    only when started with ``--enable-prompt-tokens-details``).
    """

    def __init__(self, request: GenerationRequest) -> None:
        self.request_id = request.request_id
        self.top_n = request.params.logprobs or 0
        self.copies = greedy_copies(request)
        self._held: list[ChoiceOutput] = []
        self.cached_tokens = 0
        self.tokens_seen = 0

    def feed(self, event: dict[str, Any]) -> GenerationOutput | None:
        """The output to yield for ``event`` now (``None``: nothing yet)."""
        usage = event.get("usage")
        if isinstance(usage, dict):
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                self.cached_tokens = details["cached_tokens"]
        now: list[ChoiceOutput] = []
        for raw in event.get("choices") or ():
            choice = self._choice(raw)
            self.tokens_seen += len(choice.token_ids)
            if choice.finish_reason is not None:
                self._held.append(choice)
            else:
                now.append(choice)
        return self._output(now, cached=0) if now else None

    def finish(self) -> GenerationOutput | None:
        """What is still held when the stream ended (with ``[DONE]``)."""
        if not self._held:
            return None
        held, self._held = self._held, []
        return self._output(held, cached=self.cached_tokens)

    def _output(self, choices: list[ChoiceOutput], cached: int) -> GenerationOutput:
        if self.copies > 1:
            choices = [replace(c, index=i) for i in range(self.copies) for c in choices]
        return GenerationOutput(self.request_id, choices, cached_tokens=cached)

    def _choice(self, raw: dict[str, Any]) -> ChoiceOutput:
        logprobs = raw.get("logprobs")
        return ChoiceOutput(
            index=int(raw.get("index", 0)),
            text=raw.get("text") or "",
            token_ids=tuple(raw.get("token_ids") or ()),
            logprobs=_logprobs(logprobs, self.top_n) if isinstance(logprobs, dict) else None,
            finish_reason=raw.get("finish_reason"),
        )


def _logprobs(raw: dict[str, Any], top_n: int) -> tuple[TokenLogprob, ...]:
    """vLLM's completion logprobs (the sampled token plus the top ``n``, keyed by text)
    as the exact top ``n`` per token."""
    tokens = raw.get("tokens") or []
    values = raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or []
    result = []
    for i, token in enumerate(tokens):
        value = values[i] if i < len(values) and values[i] is not None else float("-inf")
        candidates = tops[i] if i < len(tops) and isinstance(tops[i], dict) else {}
        ranked = sorted(candidates.items(), key=lambda kv: kv[1], reverse=True)[:top_n]
        top = tuple((str(t), float(lp)) for t, lp in ranked)
        result.append(TokenLogprob(str(token), float(value), top))
    return tuple(result)
