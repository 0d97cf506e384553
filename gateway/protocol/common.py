"""Models shared by every endpoint: errors, usage, model cards, response_format."""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Bounds vLLM's own server applies (or needs): seeds are int64, and the engine keeps
# top_k in an int32 array (any k at or above the vocabulary size means "no top-k").
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_TOP_K = 2**31 - 1
# The engine compares every stop string with the tail of each choice's text after every
# token, and a JSON schema is compiled into a grammar: both cost in proportion to their
# size, so a request may not make them unbounded.
MAX_STOP_CHARS = 1024
MAX_STOP_TOTAL_BYTES = 4096
MAX_SCHEMA_DEPTH = 64
MAX_SCHEMA_NODES = 10_000


def is_none(value: object) -> bool:
    """``exclude_if`` for optional response keys that OpenAI's schema types as
    non-nullable (``system_fingerprint``, a delta's ``role``): with no value the key is
    left out, never sent as ``null``. Keys the schema marks nullable (``finish_reason``,
    ``logprobs``) keep their ``null``, as OpenAI sends them."""
    return value is None


class OpenAIModel(BaseModel):
    """Base of request models: unknown fields are refused, as OpenAI does."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class VLLMSamplingExtensions(BaseModel):
    """vLLM's sampling extensions, accepted so vLLM clients (and its benchmark) work as is."""

    top_k: int | None = Field(
        default=None,
        ge=-1,
        le=MAX_TOP_K,
        description="vLLM extension: top-k sampling (0 or -1: off).",
    )
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
    prompt_tokens_details: PromptTokensDetails | None = Field(default=None, exclude_if=is_none)


class StreamOptions(OpenAIModel):
    include_usage: bool | None = None
    include_obfuscation: bool | None = Field(
        default=None, description="Accepted for SDK compatibility; this server never obfuscates."
    )


def bounded_stop(value: str | list[str] | None) -> str | list[str] | None:
    """``field_validator`` of ``stop``: each sequence at most ``MAX_STOP_CHARS``
    characters, all of them together at most ``MAX_STOP_TOTAL_BYTES`` (UTF-8)."""
    stops = [] if value is None else [value] if isinstance(value, str) else value
    if any(len(s) > MAX_STOP_CHARS for s in stops):
        raise ValueError(f"each stop sequence may have at most {MAX_STOP_CHARS} characters")
    if sum(len(s.encode()) for s in stops) > MAX_STOP_TOTAL_BYTES:
        raise ValueError(f"the stop sequences may take at most {MAX_STOP_TOTAL_BYTES} bytes")
    return value


def json_shape(value: object) -> tuple[int, int]:
    """(depth, nodes) of a parsed JSON value; iterative, so any depth is measured safely."""
    depth = nodes = 0
    pending: list[tuple[object, int]] = [(value, 1)]
    while pending:
        item, level = pending.pop()
        nodes += 1
        depth = max(depth, level)
        if isinstance(item, dict):
            pending.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            pending.extend((v, level + 1) for v in item)
    return depth, nodes


class JsonSchemaSpec(OpenAIModel):
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(
        default=None,
        alias="schema",
        description=f"At most {MAX_SCHEMA_DEPTH} levels of JSON nesting and "
        f"{MAX_SCHEMA_NODES} values in all.",
    )
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        depth, nodes = json_shape(value)
        if depth > MAX_SCHEMA_DEPTH:
            raise ValueError(f"the schema may nest at most {MAX_SCHEMA_DEPTH} levels deep")
        if nodes > MAX_SCHEMA_NODES:
            raise ValueError(f"the schema may hold at most {MAX_SCHEMA_NODES} values")
        return value


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


class AdminRequest(BaseModel):
    """Base of admin API request bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")
