"""``/v1/chat/completions`` request, response and stream-chunk models."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from gateway.protocol.common import (
    INT64_MAX,
    INT64_MIN,
    OpenAIModel,
    ResponseFormat,
    StreamOptions,
    Usage,
    VLLMSamplingExtensions,
    bounded_stop,
    is_none,
)
from gateway.protocol.logprobs import ChatLogprobs
from gateway.protocol.tools import (
    ChatTool,
    MessageToolCall,
    NamedToolChoice,
    ToolCall,
    ToolCallDelta,
)
from retrieval import SearchMode


class TextContentPart(OpenAIModel):
    type: Literal["text"]
    text: str


class ChatMessage(OpenAIModel):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextContentPart] | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[MessageToolCall] | None = Field(
        default=None, description="An assistant turn's calls (role assistant only)."
    )
    tool_call_id: str | None = Field(
        default=None, description="The call a tool turn answers (role tool only)."
    )
    refusal: str | None = None

    def text(self) -> str:
        """The message's text, with content parts joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(
            part.text if isinstance(part, TextContentPart) else str(part.get("text", ""))
            for part in self.content
        )


SearchModeName = SearchMode
"""The retrieval library's search modes (one definition, in ``retrieval.search``)."""


class RagOptions(OpenAIModel):
    """Extension: answer from retrieved, numbered sources. The OpenAI SDK sends it with
    ``extra_body={"rag": {"collection": "manuals"}}``."""

    collection: str | list[str] = Field(
        description="Collection to search, or several searched together (at most 8). A "
        "tenant may only name its own collections.",
    )
    top_k: int | None = Field(
        default=None, ge=1, description="How many chunks to retrieve (default: server config)."
    )
    mode: SearchModeName | None = Field(
        default=None,
        description="dense (embeddings), bm25 (keywords) or hybrid (both, fused by reciprocal "
        "rank); default: server config.",
    )

    def names(self) -> list[str]:
        return [self.collection] if isinstance(self.collection, str) else list(self.collection)


class ChatCitation(BaseModel):
    """Extension: what ``[number]`` in the answer refers to."""

    number: int = Field(description="The n of the [n] marker given to the model.")
    title: str = Field(description="Title of the source document.")
    source: str = Field(description="Path, URL or upload name of the document.")
    chunk_id: str = Field(description="The retrieved chunk (see /v1/retrieval/search).")
    document_id: str
    collection: str
    score: float = Field(description="The search mode's score; higher is better.")
    heading_path: list[str] = Field(default=[], description="Headings above the chunk.")


# Parameters of OpenAI's API that this server does not offer: accepted by the schema
# only so that the service can refuse them with a 400 naming the parameter.
UNSUPPORTED_CHAT_PARAMS = (
    "functions",
    "function_call",
    "logit_bias",
    "audio",
    "prediction",
    "web_search_options",
    "reasoning_effort",
    "verbosity",
)


class ChatCompletionRequest(OpenAIModel, VLLMSamplingExtensions):
    model: str | None = Field(
        default=None, description="Required unless the caller's tenant has a default_model."
    )
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int | None = Field(default=None, ge=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    user: str | None = None
    # Accepted with their default meaning only (checked in the service).
    modalities: list[str] | None = None
    service_tier: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    cache_salt: str | None = Field(
        default=None,
        description="vLLM extension. Ignored: the gateway sets the prefix-cache salt itself.",
    )
    tools: list[ChatTool] | None = Field(
        default=None, description="Function tools (the only kind offered)."
    )
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: Any = None
    logit_bias: dict[str, float] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    reasoning_effort: str | None = None
    verbosity: str | None = None
    rag: RagOptions | None = Field(
        default=None,
        description="loragate extension: retrieve sources for the last user message, inject "
        "them as numbered sources and return `citations`.",
    )

    @field_validator("stop")
    @classmethod
    def _bounded_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        return bounded_stop(value)


class ChatCompletionMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None = None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, exclude_if=is_none)


class ChatCompletionChoice(BaseModel):
    index: int
    message: ChatCompletionMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatCompletionChoice]
    usage: Usage
    system_fingerprint: str | None = Field(default=None, exclude_if=is_none)
    citations: list[ChatCitation] | None = Field(
        default=None,
        exclude_if=is_none,
        description="loragate extension, only when retrieval ran: the sources given to the "
        "model, numbered as in the prompt. Omitted otherwise.",
    )

    def json_body(self) -> str:
        """The JSON sent: OpenAI's exact shape, plus ``citations`` when retrieval ran."""
        return self.model_dump_json()


class ChoiceDelta(BaseModel):
    """Keys without a value are left out: ``{}`` on a finish chunk, as OpenAI sends it."""

    role: Literal["assistant"] | None = Field(default=None, exclude_if=is_none)
    content: str | None = Field(default=None, exclude_if=is_none)
    tool_calls: list[ToolCallDelta] | None = Field(default=None, exclude_if=is_none)


class ChatCompletionChunkChoice(BaseModel):
    index: int
    delta: ChoiceDelta
    logprobs: ChatLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatCompletionChunkChoice]
    # Nullable in OpenAI's schema, so kept: null on every chunk but the last with
    # stream_options.include_usage (as OpenAI sends it); the caller excludes it otherwise.
    usage: Usage | None = None
    system_fingerprint: str | None = Field(default=None, exclude_if=is_none)
    citations: list[ChatCitation] | None = Field(
        default=None,
        exclude_if=is_none,
        description="loragate extension: on the chunk carrying the last finish_reason, when "
        "retrieval ran. Omitted otherwise.",
    )
