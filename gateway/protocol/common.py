"""Models shared by every endpoint: errors, usage, model cards, response_format."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class OpenAIModel(BaseModel):
    """Base of request models: unknown fields are refused, as OpenAI does."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class VLLMSamplingExtensions(BaseModel):
    """vLLM's sampling extensions, accepted so vLLM clients (and its benchmark) work as is."""

    top_k: int | None = Field(default=None, ge=-1, description="vLLM extension: top-k sampling.")
    min_p: float | None = Field(default=None, ge=0.0, le=1.0, description="vLLM extension.")
    repetition_penalty: float | None = Field(
        default=None, gt=0.0, le=2.0, description="vLLM extension."
    )
    min_tokens: int | None = Field(default=None, ge=0, description="vLLM extension.")
    ignore_eos: bool | None = Field(
        default=None, description="vLLM extension: keep generating past end-of-sequence."
    )


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorInfo


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails | None = None


class StreamOptions(OpenAIModel):
    include_usage: bool | None = None
    include_obfuscation: bool | None = Field(
        default=None, description="Accepted for SDK compatibility; this server never obfuscates."
    )


class JsonSchemaSpec(OpenAIModel):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(OpenAIModel):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = Field(default_factory=lambda: int(time.time()))
    owned_by: str = "loragate"
    root: str | None = Field(default=None, description="The model this one is served from.")
    parent: str | None = Field(
        default=None, description="For an adapter: the id of its base model."
    )
    max_model_len: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
