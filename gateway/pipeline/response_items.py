"""Responses items to chat messages and back.

- ``input_items``: the request's ``input`` as stored items (ids given, text content
  only); a bad item is a 400 naming ``input[i]``.
- ``chat_messages``: instructions, the chain's earlier turns and this input as the
  chat messages ``ChatEndpoint`` renders, with where each came from (so its errors
  can name the Responses parameter).
- ``chat_tools`` / ``chat_tool_choice``: function tools in chat's shape.
- ``output_items``: a chat choice's parsed output as Responses output items. This is
  the one place tool calls become ``function_call`` items.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from gateway.errors import InvalidRequestError, UnsupportedParameterError
from gateway.model_io.tool_stream import CollectedCall
from gateway.protocol.chat import ChatCitation
from gateway.protocol.responses import (
    FileCitation,
    FunctionCallItem,
    FunctionCallOutput,
    FunctionCallOutputItem,
    ItemModel,
    ItemStatus,
    MessageItem,
    OutputItem,
    OutputMessage,
    OutputText,
)

ITEM_TYPES: dict[str, type[ItemModel]] = {
    "message": MessageItem,
    "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem,
}
TEXT_PARTS = {"input_text": "text", "output_text": "text", "text": "text", "refusal": "refusal"}


def item_id(prefix: str) -> str:
    """An id, not a secret (as the pipeline's request ids)."""
    return f"{prefix}_{random.getrandbits(128):032x}"


def input_items(value: str | list[dict[str, Any]], max_items: int) -> list[dict[str, Any]]:
    """The request's input as items in the shape ``input_items`` lists them."""
    if isinstance(value, str):
        return [_message("user", value)]
    if not value:
        raise InvalidRequestError("input must hold at least one item.", param="input")
    if len(value) > max_items:
        raise InvalidRequestError(f"At most {max_items} input items are allowed.", param="input")
    return [_input_item(raw, f"input[{i}]") for i, raw in enumerate(value)]


def _input_item(raw: dict[str, Any], param: str) -> dict[str, Any]:
    kind = raw.get("type", "message")
    model = ITEM_TYPES.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise InvalidRequestError(
            f"Input items of type {kind!r} are not supported; use one of {', '.join(ITEM_TYPES)}.",
            param=f"{param}.type",
        )
    try:
        item = model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        raise InvalidRequestError(
            f"Invalid input item: {first['msg']}.", param=f"{param}{where}"
        ) from None
    if isinstance(item, MessageItem):
        return _message(item.role, _text(item.content, f"{param}.content"))
    if isinstance(item, FunctionCallItem):
        return {
            "id": item.id or item_id("fc"),
            "type": "function_call",
            "call_id": item.call_id,
            "name": item.name,
            "arguments": item.arguments,
            "status": "completed",
        }
    assert isinstance(item, FunctionCallOutputItem)
    return {
        "id": item.id or item_id("fco"),
        "type": "function_call_output",
        "call_id": item.call_id,
        "output": _text(item.output, f"{param}.output"),
        "status": "completed",
    }


def _message(role: str, text: str) -> dict[str, Any]:
    if role == "assistant":
        content: dict[str, Any] = OutputText(text=text).model_dump()
    else:
        content = {"type": "input_text", "text": text}
    return {
        "id": item_id("msg"),
        "type": "message",
        "role": role,
        "status": "completed",
        "content": [content],
    }


def _text(content: str | list[dict[str, Any]], param: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        key = TEXT_PARTS.get(part.get("type"))  # type: ignore[arg-type]
        value = part.get(key) if key else None
        if not isinstance(value, str):
            raise InvalidRequestError(
                "Only text content parts (input_text, output_text) are supported by this model.",
                param=f"{param}[{j}]",
            )
        texts.append(value)
    return "".join(texts)


def chat_messages(
    instructions: str | None,
    history: list[dict[str, Any]],
    items: list[dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Chat messages and, for each, the Responses parameter it came from."""
    messages: list[dict[str, Any]] = []
    origins: list[str] = []
    if instructions is not None:
        messages.append({"role": "system", "content": instructions})
        origins.append("instructions")
    for origin, item in [
        *(("previous_response_id", h) for h in history),
        *((f"input[{i}]", it) for i, it in enumerate(items)),
    ]:
        kind = item["type"]
        if kind == "message":
            text = "".join(part.get("text", "") for part in item["content"])
            messages.append({"role": item["role"], "content": text})
        elif kind == "function_call":
            call = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            if messages and messages[-1]["role"] == "assistant":
                # The calls of one turn follow its message (or each other): one chat turn.
                messages[-1].setdefault("tool_calls", []).append(call)
                continue
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append(
                {"role": "tool", "tool_call_id": item["call_id"], "content": item["output"]}
            )
        else:  # stored by a newer version: a 400, never a 500
            raise InvalidRequestError(f"Items of type {kind!r} cannot be continued.", param=origin)
        origins.append(origin)
    return messages, origins


def chat_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Responses function tools (flat) as chat tools (``function`` nested)."""
    if tools is None:
        return None
    out = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise UnsupportedParameterError(
                f"tools[{i}].type", f"only function tools are offered, not {tool.get('type')!r}"
            )
        function = {k: v for k, v in tool.items() if k != "type"}
        out.append({"type": "function", "function": function})
    return out


def chat_tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
    if choice is None or isinstance(choice, str):
        return choice
    if choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise UnsupportedParameterError("tool_choice", "only none, auto, required or a function")


def output_items(
    key: str,
    text: str,
    calls: Sequence[CollectedCall],
    annotations: list[FileCitation],
    *,
    incomplete: bool,
) -> list[OutputItem]:
    """A chat choice's output, as ``CallExtractor`` parsed it (its text, its calls), as
    output items: the message first when it has text (or there is nothing else), then
    one ``function_call`` per call. Ids come from ``key`` (a streamed response's items
    were announced under the same ids)."""
    status: ItemStatus = "incomplete" if incomplete else "completed"
    items: list[OutputItem] = []
    if text or not calls:
        content = [OutputText(text=text, annotations=annotations)]
        items.append(OutputMessage(id=message_id(key), status=status, content=content))
    for i, call in enumerate(calls):
        items.append(
            FunctionCallOutput(
                id=call_item_id(key, i),
                call_id=call.id,
                name=call.name,
                arguments=call.arguments,
                status=status,
            )
        )
    return items


def message_id(key: str) -> str:
    return f"msg_{key}"


def call_item_id(key: str, index: int) -> str:
    return f"fc_{key}_{index}"


def file_citations(text: str, citations: list[ChatCitation] | None) -> list[FileCitation]:
    """RAG sources (``ChatCitation``) as ``file_citation`` annotations on ``text``."""
    out = []
    for c in citations or ():
        at = text.find(f"[{c.number}]")
        out.append(
            FileCitation(
                file_id=c.document_id,
                filename=c.source,
                index=at if at >= 0 else len(text),
                title=c.title,
            )
        )
    return out
