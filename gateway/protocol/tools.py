"""Function tools as OpenAI's chat completions API names them: definitions, the
``tool_choice`` forms, the calls an assistant turn carries and their stream deltas."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from gateway.protocol.common import OpenAIModel, is_none


class FunctionDefinition(OpenAIModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] | None = Field(
        default=None, description="A JSON Schema of the arguments object (default: no arguments)."
    )
    strict: bool | None = Field(
        default=None,
        description="true: every call returned validates against `parameters` (one that "
        "does not comes back as text).",
    )


class ChatTool(OpenAIModel):
    type: Literal["function"]
    function: FunctionDefinition


class FunctionName(OpenAIModel):
    name: str


class NamedToolChoice(OpenAIModel):
    type: Literal["function"]
    function: FunctionName


ToolChoiceOption = Literal["none", "auto", "required"] | NamedToolChoice


class CalledFunction(OpenAIModel):
    name: str
    arguments: str = Field(description="The arguments as a JSON text.")


class MessageToolCall(OpenAIModel):
    """A call in an assistant turn of the conversation a client sends back."""

    id: str = Field(max_length=256)
    type: Literal["function"] = "function"
    function: CalledFunction


class ToolCall(BaseModel):
    """A call in a response."""

    id: str
    type: Literal["function"] = "function"
    function: CalledFunctionOut


class CalledFunctionOut(BaseModel):
    name: str
    arguments: str


class FunctionDelta(BaseModel):
    name: str | None = Field(default=None, exclude_if=is_none)
    arguments: str | None = Field(default=None, exclude_if=is_none)


class ToolCallDelta(BaseModel):
    """One call's part of a stream chunk: ``id``, ``type`` and the name come first, then
    argument fragments under the same ``index``."""

    index: int
    id: str | None = Field(default=None, exclude_if=is_none)
    type: Literal["function"] | None = Field(default=None, exclude_if=is_none)
    function: FunctionDelta | None = Field(default=None, exclude_if=is_none)


ToolCall.model_rebuild()
