"""``ToolSet``: a request's function tools, checked once, and what follows from them.

What the model may do (``ToolMode``: ``none``, ``auto``, ``required``, one named
function), the engine's constraint for ``required`` and named calls (a JSON schema of
the calls, so even a small model returns arguments that validate), and the check every
call must pass before it is returned as a call rather than as text.

The constrained output is a JSON array of ``{"name": ..., "parameters": {...}}``
objects, the fallback format's call objects (``tool_format``): names first, so a stream
can announce each call before its arguments.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError

from gateway.engine.interface import StructuredOutput
from gateway.errors import InvalidRequestError
from gateway.protocol.common import MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES, json_shape
from gateway.protocol.tools import ChatTool, FunctionDefinition, NamedToolChoice

NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}


class ToolMode(enum.StrEnum):
    NONE = "none"
    AUTO = "auto"
    REQUIRED = "required"
    NAMED = "named"


@dataclass(frozen=True)
class ToolBounds:
    """How many tools, and how large their definitions, one request may send."""

    max_tools: int
    max_definition_bytes: int


@dataclass(frozen=True)
class Function:
    definition: FunctionDefinition
    schema: dict[str, Any]
    validator: Draft202012Validator

    @property
    def name(self) -> str:
        return self.definition.name

    @property
    def strict(self) -> bool:
        return bool(self.definition.strict)

    def accepts(self, arguments: object) -> bool:
        """The arguments are an object, and match the schema when the tool is strict."""
        if not isinstance(arguments, dict):
            return False
        if not self.strict:
            return True
        try:
            self.validator.validate(arguments)
        except (ValidationError, RecursionError):
            return False
        return True


@dataclass(frozen=True)
class ToolSet:
    functions: dict[str, Function]
    mode: ToolMode
    named: str | None = None
    parallel: bool = True

    @classmethod
    def of(
        cls,
        tools: list[ChatTool] | None,
        choice: str | NamedToolChoice | None,
        parallel: bool | None,
        bounds: ToolBounds,
        *,
        param: str = "tools",
    ) -> ToolSet | None:
        """The request's tools, or None when it sends none (400 naming the field for
        any definition or choice that cannot be honoured)."""
        if not tools:
            if choice is not None and choice != "none":
                raise InvalidRequestError(
                    "tool_choice needs tools.", param=_sibling(param, "tool_choice")
                )
            return None
        if len(tools) > bounds.max_tools:
            raise InvalidRequestError(f"At most {bounds.max_tools} tools are allowed.", param=param)
        size = len(json.dumps([t.model_dump(exclude_none=True) for t in tools]))
        if size > bounds.max_definition_bytes:
            raise InvalidRequestError(
                f"The tool definitions take {size} bytes; at most "
                f"{bounds.max_definition_bytes} are allowed.",
                param=param,
            )
        functions: dict[str, Function] = {}
        for i, tool in enumerate(tools):
            name = tool.function.name
            if name in functions:
                raise InvalidRequestError(
                    f"Function name '{name}' is defined twice.", param=f"{param}[{i}].function.name"
                )
            functions[name] = _function(tool.function, f"{param}[{i}].function.parameters")
        mode, named = _mode(choice, functions, _sibling(param, "tool_choice"))
        return cls(functions, mode, named, parallel is not False)

    def constraint(self) -> StructuredOutput | None:
        """The engine's structured output for ``required`` and named calls (else None)."""
        if self.mode not in (ToolMode.REQUIRED, ToolMode.NAMED):
            return None
        chosen = [self.functions[self.named]] if self.named else list(self.functions.values())
        items = [
            {
                "type": "object",
                "properties": {"name": {"const": f.name}, "parameters": f.schema},
                "required": ["name", "parameters"],
                "additionalProperties": False,
            }
            for f in chosen
        ]
        schema: dict[str, Any] = {
            "type": "array",
            "items": items[0] if len(items) == 1 else {"anyOf": items},
            "minItems": 1,
        }
        if self.named or not self.parallel:
            schema["maxItems"] = 1
        return StructuredOutput(kind="json_schema", json_schema=schema)

    @property
    def active(self) -> bool:
        """Whether the model is shown the tools and its output read for calls (not with
        ``tool_choice: none``)."""
        return self.mode is not ToolMode.NONE


def _sibling(param: str, name: str) -> str:
    """``tool_choice`` beside ``tools`` (``tools`` may be nested in another request)."""
    head, dot, _ = param.rpartition(".")
    return f"{head}{dot}{name}"


def _function(definition: FunctionDefinition, param: str) -> Function:
    schema = NO_ARGUMENTS if definition.parameters is None else definition.parameters
    depth, nodes = json_shape(schema)
    if depth > MAX_SCHEMA_DEPTH or nodes > MAX_SCHEMA_NODES:
        raise InvalidRequestError(
            f"A function's parameters may nest at most {MAX_SCHEMA_DEPTH} levels and hold at "
            f"most {MAX_SCHEMA_NODES} values.",
            param=param,
        )
    if _remote_refs(schema):
        raise InvalidRequestError(
            "A function's parameters may only refer to their own definitions ($ref '#...').",
            param=param,
        )
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidRequestError(
            f"The function's parameters are not a valid JSON Schema: {exc.message}", param=param
        ) from exc
    if schema.get("type", "object") != "object":
        raise InvalidRequestError(
            "A function's parameters must describe an object (type 'object').", param=param
        )
    return Function(definition, schema, Draft202012Validator(schema))


def _remote_refs(node: object) -> bool:
    pending = [node]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            ref = item.get("$ref")
            if isinstance(ref, str) and not ref.startswith("#"):
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _mode(
    choice: str | NamedToolChoice | None, functions: dict[str, Function], param: str
) -> tuple[ToolMode, str | None]:
    if isinstance(choice, NamedToolChoice):
        name = choice.function.name
        if name not in functions:
            raise InvalidRequestError(
                f"tool_choice names function '{name}', which is not in tools.",
                param=f"{param}.function.name",
            )
        return ToolMode.NAMED, name
    return ToolMode(choice or "auto"), None
