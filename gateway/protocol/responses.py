"""``/v1/responses`` request, items and response object, named as OpenAI names them.

Input items are parsed one by one by the endpoint (``gateway.pipeline.response_items``)
so that a bad one is a 400 naming ``input[i]``; the models here are their shapes.
Stream events are built in ``gateway.pipeline.response_events``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gateway.protocol.chat import RagOptions
from gateway.protocol.common import (
    MAX_SCHEMA_DEPTH,
    MAX_SCHEMA_NODES,
    JsonSchemaSpec,
    OpenAIModel,
    ResponseFormat,
    StreamOptions,
    is_none,
    json_shape,
)

MAX_METADATA_KEYS = 16
MAX_METADATA_KEY_CHARS = 64
MAX_METADATA_VALUE_CHARS = 512


class TextFormat(OpenAIModel):
    """``text.format``: plain text, JSON mode, or a JSON schema (Structured Outputs)."""

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = Field(default=None, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _bounded(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        depth, nodes = json_shape(value)
        if depth > MAX_SCHEMA_DEPTH or nodes > MAX_SCHEMA_NODES:
            raise ValueError(
                f"the schema may nest at most {MAX_SCHEMA_DEPTH} levels deep and hold at most "
                f"{MAX_SCHEMA_NODES} values"
            )
        return value

    def response_format(self) -> ResponseFormat:
        """The same format as chat's ``response_format`` (bounded by ``JsonSchemaSpec``)."""
        if self.type != "json_schema":
            return ResponseFormat(type=self.type)
        spec = JsonSchemaSpec.model_validate(
            {
                "name": self.name or "response",
                "description": self.description,
                "schema": self.schema_,
                "strict": self.strict,
            }
        )
        return ResponseFormat(type="json_schema", json_schema=spec)

    def echoed(self) -> dict[str, Any]:
        """As the response object repeats it."""
        return self.model_dump(by_alias=True, exclude_none=True)


class TextConfig(OpenAIModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


# Parameters of OpenAI's Responses API this server does not offer (any value but the
# default): accepted by the schema only so the endpoint can refuse them naming them.
UNSUPPORTED_RESPONSES_PARAMS = (
    "reasoning",
    "conversation",
    "prompt",
    "top_logprobs",
    "max_tool_calls",
    "prompt_cache_retention",
    "context_management",
)


class ResponsesRequest(OpenAIModel):
    model: str | None = Field(
        default=None, description="Required unless the caller's tenant has a default_model."
    )
    input: str | list[dict[str, Any]] = Field(
        description="A user message as a string, or input items: `message` (roles user, "
        "system, developer, assistant; text content), `function_call`, "
        "`function_call_output`."
    )
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    metadata: dict[str, str] | None = None
    store: bool | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    text: TextConfig | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    service_tier: str | None = None
    truncation: str | None = None
    background: bool | None = None
    include: list[str] | None = None
    # Refused unless absent (see UNSUPPORTED_RESPONSES_PARAMS).
    reasoning: dict[str, Any] | None = None
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    top_logprobs: int | None = None
    max_tool_calls: int | None = None
    prompt_cache_retention: str | None = None
    context_management: list[dict[str, Any]] | None = None
    rag: RagOptions | None = Field(
        default=None,
        description="loragate extension: retrieve sources for the last user message, inject "
        "them as numbered sources and return them as `file_citation` annotations.",
    )

    @field_validator("metadata")
    @classmethod
    def _bounded_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is None:
            return None
        if len(value) > MAX_METADATA_KEYS:
            raise ValueError(f"metadata may hold at most {MAX_METADATA_KEYS} pairs")
        if any(len(k) > MAX_METADATA_KEY_CHARS for k in value):
            raise ValueError(f"metadata keys may have at most {MAX_METADATA_KEY_CHARS} characters")
        if any(len(v) > MAX_METADATA_VALUE_CHARS for v in value.values()):
            raise ValueError(
                f"metadata values may have at most {MAX_METADATA_VALUE_CHARS} characters"
            )
        return value

    @property
    def stored(self) -> bool:
        """OpenAI stores responses unless told not to."""
        return self.store is not False


# ---------------------------------------------------------------------- input items


class ItemModel(BaseModel):
    """Input items: clients send output items back as input (SDKs replay a response's
    ``output``), with fields that only describe them; unknown keys are ignored."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())


class MessageItem(ItemModel):
    type: Literal["message"] = "message"
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[dict[str, Any]]
    id: str | None = None


class FunctionCallItem(ItemModel):
    type: Literal["function_call"]
    call_id: str = Field(min_length=1, max_length=256)
    name: str = Field(min_length=1, max_length=256)
    arguments: str
    id: str | None = None


class FunctionCallOutputItem(ItemModel):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1, max_length=256)
    output: str | list[dict[str, Any]]
    id: str | None = None


# ------------------------------------------------------------------- response object


class FileCitation(BaseModel):
    """A retrieved source, as OpenAI's ``file_citation`` annotation."""

    type: Literal["file_citation"] = "file_citation"
    file_id: str = Field(description="The cited document's id (see /v1/retrieval/search).")
    filename: str = Field(description="The document's path, URL or upload name.")
    index: int = Field(
        description="Offset in the text of the source's first [n] marker (the text's end "
        "when the model did not cite it)."
    )
    title: str = Field(description="loragate extension: the document's title.")


class OutputText(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[FileCitation] = []
    logprobs: list[dict[str, Any]] = []


ItemStatus = Literal["in_progress", "completed", "incomplete"]


class OutputMessage(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    status: ItemStatus
    content: list[OutputText]


class FunctionCallOutput(BaseModel):
    """A function call the model made (an output item)."""

    id: str
    type: Literal["function_call"] = "function_call"
    call_id: str
    name: str
    arguments: str
    status: ItemStatus = "completed"


OutputItem = OutputMessage | FunctionCallOutput


class InputTokensDetails(BaseModel):
    cached_tokens: int = 0
    cache_write_tokens: int = 0


class OutputTokensDetails(BaseModel):
    reasoning_tokens: int = 0


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens: int
    output_tokens_details: OutputTokensDetails = OutputTokensDetails()
    total_tokens: int


class IncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens", "content_filter"]


class ResponseError(BaseModel):
    code: str
    message: str


Status = Literal["completed", "failed", "in_progress", "incomplete"]


class ResponseObject(BaseModel):
    """OpenAI's ``Response``. Keys its schema types as non-nullable are left out when
    they have no value (``usage`` while in progress, ``user``)."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    status: Status
    completed_at: int | None = None
    background: bool = False
    error: ResponseError | None = None
    incomplete_details: IncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    max_tool_calls: int | None = None
    model: str
    output: list[OutputItem] = []
    parallel_tool_calls: bool = True
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    service_tier: str = "default"
    store: bool = True
    temperature: float | None = None
    text: dict[str, Any] = Field(default_factory=lambda: {"format": {"type": "text"}})
    tool_choice: str | dict[str, Any] = "auto"
    tools: list[dict[str, Any]] = []
    top_logprobs: int = 0
    top_p: float | None = None
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = Field(default=None, exclude_if=is_none)
    user: str | None = Field(default=None, exclude_if=is_none)
    metadata: dict[str, str] = {}


class ResponseDeleted(BaseModel):
    id: str
    object: Literal["response.deleted"] = "response.deleted"
    deleted: bool = True


class InputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str
    last_id: str
    has_more: bool
