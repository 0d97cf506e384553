"""``/v1/completions`` (legacy text completions) request and response models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from gateway.protocol.common import (
    INT64_MAX,
    INT64_MIN,
    OpenAIModel,
    StreamOptions,
    Usage,
    VLLMSamplingExtensions,
    bounded_stop,
    is_none,
)
from gateway.protocol.logprobs import CompletionLogprobs

UNSUPPORTED_COMPLETION_PARAMS = ("suffix", "logit_bias")


class CompletionRequest(OpenAIModel, VLLMSamplingExtensions):
    model: str | None = Field(
        default=None, description="Required unless the caller's tenant has a default_model."
    )
    prompt: str | list[str] | list[int] | list[list[int]]
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1)
    best_of: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool | None = False
    user: str | None = None
    cache_salt: str | None = Field(
        default=None,
        description="vLLM extension. Ignored: the gateway sets the prefix-cache salt itself.",
    )
    suffix: str | None = None
    logit_bias: dict[str, float] | None = None

    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        return bounded_stop(value)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    # OpenAI's schema types `usage` non-nullable here (unlike chat chunks): a streamed
    # chunk without usage leaves the key out.
    usage: Usage | None = Field(default=None, exclude_if=is_none)
    system_fingerprint: str | None = Field(default=None, exclude_if=is_none)


def completion_prompts(prompt: Any) -> list[str | list[int]]:
    """Normalise ``prompt`` to a list of prompts, each text or token ids."""
    if isinstance(prompt, str):
        return [prompt]
    if prompt and all(isinstance(x, int) for x in prompt):
        return [list(prompt)]
    return list(prompt)
