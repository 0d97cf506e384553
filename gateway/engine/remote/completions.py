"""A ``GenerationRequest`` as vLLM's ``/v1/completions`` body; its SSE events as outputs.

The prompt goes as token ids (the gateway rendered it), so the replica computes exactly
what the in-process engine would. Field names are those of vLLM 0.32's
``CompletionRequest`` (``vllm/entrypoints/openai/completion/protocol.py``).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from gateway.engine.interface import (
    ChoiceOutput,
    GenerationOutput,
    GenerationRequest,
    TokenLogprob,
)
from gateway.engine.remote.client import ReplicaProtocolError


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


FINISH_REASONS = frozenset({"stop", "length", "abort", "repetition"})
"""vLLM's finish reasons for a completion choice (``vllm.v1.engine.FinishReason``, less
``error``, which vLLM turns into an error answer)."""

MAX_TOKEN_ID = 1 << 31
MAX_CHARS_PER_TOKEN = 1024
"""Text a choice may carry per token it produced (plus one token's worth): a generous
bound on the longest token any tokenizer decodes to."""


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise ReplicaProtocolError(f"the replica sent {what}")


def _is_int(value: Any, upper: int) -> bool:
    """An int (not a bool) in ``[0, upper]``."""
    return type(value) is int and 0 <= value <= upper


def _is_logprob(value: Any) -> bool:
    """A number a log probability can be (``-inf`` included; no NaN, no huge ints)."""
    if type(value) is int:
        return -MAX_TOKEN_ID <= value <= 0
    return type(value) is float and not math.isnan(value) and value != math.inf


class StreamDecoder:
    """Turns one stream's events into ``GenerationOutput`` deltas, strictly.

    A replica is a trust boundary: every event is checked against what was asked for
    (choice indexes below ``n``, text a string, token ids a list of ints and no more
    than ``max_tokens`` per choice, known finish reasons, logprobs and usage of the
    right types and within bounds) and any violation raises ``ReplicaProtocolError``,
    so nothing malformed reaches the pipeline and the tokens booked never exceed
    ``n x max_tokens``.

    Final chunks (those with a ``finish_reason``) are held until the usage event that
    follows them, so the last output carries the prompt tokens the replica served from
    its prefix cache (``usage.prompt_tokens_details.cached_tokens``; vLLM reports it
    only when started with ``--enable-prompt-tokens-details``).
    """

    def __init__(self, request: GenerationRequest) -> None:
        p = request.params
        self.request_id = request.request_id
        self.top_n = p.logprobs or 0
        self.copies = greedy_copies(request)
        self.n = 1 if self.copies > 1 else p.n
        """Choices the replica was asked for."""
        self.max_tokens = p.max_tokens
        self.prompt_tokens = len(request.prompt_token_ids)
        self.max_events = self.n * (self.max_tokens + 2) + 16
        self._held: list[ChoiceOutput] = []
        self.cached_tokens = 0
        self.tokens_seen = 0
        self._events = 0
        self._tokens = [0] * self.n
        self._chars = [0] * self.n
        self._logprobs = [0] * self.n
        self._finished = [False] * self.n

    def feed(self, event: dict[str, Any]) -> GenerationOutput | None:
        """The output to yield for ``event`` now (``None``: nothing yet)."""
        self._events += 1
        _check(self._events <= self.max_events, "more events than the request can produce")
        usage = event.get("usage")
        if usage is not None:
            self._usage(usage)
        raw_choices = event.get("choices")
        if raw_choices is None:
            raw_choices = []
        _check(isinstance(raw_choices, list), "'choices' that is not a list")
        _check(len(raw_choices) <= self.n, "more choices in one event than asked for")
        now: list[ChoiceOutput] = []
        for raw in raw_choices:
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

    def _usage(self, usage: Any) -> None:
        _check(isinstance(usage, dict), "a 'usage' that is not an object")
        completion = self.n * self.max_tokens
        bounds = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }
        for key, bound in bounds.items():
            value = usage.get(key)
            _check(value is None or _is_int(value, bound), f"usage.{key} out of bounds")
        details = usage.get("prompt_tokens_details")
        if details is None:
            return
        _check(isinstance(details, dict), "prompt_tokens_details that is not an object")
        cached = details.get("cached_tokens")
        if cached is not None:
            _check(_is_int(cached, self.prompt_tokens), "cached_tokens out of bounds")
            self.cached_tokens = cached

    def _choice(self, raw: Any) -> ChoiceOutput:
        _check(isinstance(raw, dict), "a choice that is not an object")
        index = raw.get("index", 0)
        _check(_is_int(index, self.n - 1), "a choice index out of range")
        text = raw.get("text")
        text = "" if text is None else text
        _check(isinstance(text, str), "a choice text that is not a string")
        ids = raw.get("token_ids")
        ids = [] if ids is None else ids
        _check(
            isinstance(ids, list) and all(_is_int(t, MAX_TOKEN_ID) for t in ids),
            "token_ids that are not a list of token ids",
        )
        reason = raw.get("finish_reason")
        _check(
            reason is None or (isinstance(reason, str) and reason in FINISH_REASONS),
            "an unknown finish_reason",
        )
        _check(not (self._finished[index] and (ids or text)), "tokens after a choice ended")
        self._finished[index] = self._finished[index] or reason is not None
        self._tokens[index] += len(ids)
        _check(self._tokens[index] <= self.max_tokens, "more tokens than max_tokens")
        self._chars[index] += len(text)
        chars = MAX_CHARS_PER_TOKEN * (self._tokens[index] + 1)
        _check(self._chars[index] <= chars, "more text than its tokens can decode to")
        logprobs = raw.get("logprobs")
        _check(logprobs is None or isinstance(logprobs, dict), "logprobs that are not an object")
        parsed = None
        if logprobs is not None:
            parsed = _logprobs(logprobs, self.top_n)
            self._logprobs[index] += len(parsed)
            _check(self._logprobs[index] <= self.max_tokens, "more logprobs than tokens")
        return ChoiceOutput(
            index=index,
            text=text,
            token_ids=tuple(ids),
            logprobs=parsed,
            finish_reason=reason,
        )


def _logprobs(raw: dict[str, Any], top_n: int) -> tuple[TokenLogprob, ...]:
    """vLLM's completion logprobs (the sampled token plus the top ``n``, keyed by text)
    as the exact top ``n`` per token."""
    tokens = raw.get("tokens") or []
    values = raw.get("token_logprobs") or []
    tops = raw.get("top_logprobs") or []
    _check(
        isinstance(tokens, list) and all(isinstance(t, str) for t in tokens),
        "logprobs tokens that are not strings",
    )
    _check(
        isinstance(values, list) and all(v is None or _is_logprob(v) for v in values),
        "token_logprobs that are not numbers",
    )
    _check(isinstance(tops, list), "top_logprobs that are not a list")
    result = []
    for i, token in enumerate(tokens):
        value = values[i] if i < len(values) and values[i] is not None else float("-inf")
        candidates = tops[i] if i < len(tops) and tops[i] is not None else {}
        _check(
            isinstance(candidates, dict)
            and len(candidates) <= top_n + 1
            and all(_is_logprob(lp) for lp in candidates.values()),
            "top_logprobs that are not the top logprobs asked for",
        )
        ranked = sorted(candidates.items(), key=lambda kv: kv[1], reverse=True)[:top_n]
        top = tuple((t, float(lp)) for t, lp in ranked)
        result.append(TokenLogprob(token, float(value), top))
    return tuple(result)
