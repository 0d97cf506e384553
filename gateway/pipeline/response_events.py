"""``ResponseEvents``: the typed server-sent events of a streamed response, as OpenAI
sends them: ``event: <type>`` then ``data: <json>`` with the same ``type`` and a
``sequence_number`` counting from 0. No ``[DONE]``: the terminal event is
``response.completed``, ``response.incomplete`` or ``response.failed``.

``StreamedItems`` tracks a stream's output items as the model's output is told apart
into text and tool calls (``CallExtractor`` pieces): each item is announced when its
first piece comes, and closed, in output order, at the end.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring as json_string  # C; UTF-8 kept as is
from typing import Any

from pydantic import BaseModel

from gateway.model_io.tool_stream import ArgumentsPiece, CallStart, Piece, TextPiece
from gateway.pipeline.response_items import call_item_id, message_id
from gateway.protocol.responses import (
    FunctionCallOutput,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseObject,
)

TERMINAL = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
}


class ResponseEvents:
    """Builds one response's events in order. Not shared between requests."""

    def __init__(self) -> None:
        self.sequence = 0

    def _event(self, kind: str, fields: dict[str, Any]) -> str:
        data = json.dumps(
            {"type": kind, **fields, "sequence_number": self.sequence},
            ensure_ascii=False,
            separators=(",", ":"),
        )
        self.sequence += 1
        return f"event: {kind}\ndata: {data}\n\n"

    def response(self, kind: str, response: ResponseObject) -> str:
        """``response.created`` / ``response.in_progress`` / a terminal event."""
        return self._event(kind, {"response": _dump(response)})

    def finished(self, response: ResponseObject) -> str:
        return self.response(TERMINAL[response.status], response)

    def item_added(self, output_index: int, item: OutputItem) -> str:
        return self._event(
            "response.output_item.added", {"output_index": output_index, "item": _dump(item)}
        )

    def item_done(self, output_index: int, item: OutputItem) -> str:
        return self._event(
            "response.output_item.done", {"output_index": output_index, "item": _dump(item)}
        )

    def part_added(self, item_id: str, output_index: int, part: OutputText) -> str:
        return self._part("response.content_part.added", item_id, output_index, part)

    def part_done(self, item_id: str, output_index: int, part: OutputText) -> str:
        return self._part("response.content_part.done", item_id, output_index, part)

    def _part(self, kind: str, item_id: str, output_index: int, part: OutputText) -> str:
        fields = {
            "item_id": item_id,
            "output_index": output_index,
            "content_index": 0,
            "part": _dump(part),
        }
        return self._event(kind, fields)

    def text_delta(self, item_id: str, output_index: int, delta: str) -> str:
        """Most events of a stream: written directly (one JSON string, no dict)."""
        data = (
            f'{{"type":"response.output_text.delta","item_id":"{item_id}",'
            f'"output_index":{output_index},"content_index":0,"delta":{json_string(delta)},'
            f'"logprobs":[],"sequence_number":{self.sequence}}}'
        )
        self.sequence += 1
        return f"event: response.output_text.delta\ndata: {data}\n\n"

    def text_done(self, item_id: str, output_index: int, text: str) -> str:
        fields = {
            "item_id": item_id,
            "output_index": output_index,
            "content_index": 0,
            "text": text,
            "logprobs": [],
        }
        return self._event("response.output_text.done", fields)

    def annotation_added(
        self, item_id: str, output_index: int, index: int, annotation: BaseModel
    ) -> str:
        fields = {
            "item_id": item_id,
            "output_index": output_index,
            "content_index": 0,
            "annotation_index": index,
            "annotation": _dump(annotation),
        }
        return self._event("response.output_text.annotation.added", fields)

    def arguments_delta(self, item_id: str, output_index: int, delta: str) -> str:
        fields = {"item_id": item_id, "output_index": output_index, "delta": delta}
        return self._event("response.function_call_arguments.delta", fields)

    def arguments_done(self, item_id: str, output_index: int, name: str, arguments: str) -> str:
        fields = {
            "item_id": item_id,
            "output_index": output_index,
            "name": name,
            "arguments": arguments,
        }
        return self._event("response.function_call_arguments.done", fields)


def _dump(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


class StreamedItems:
    """The output items of one stream as they are announced, and their closing events."""

    def __init__(self, events: ResponseEvents, key: str) -> None:
        self._events = events
        self._key = key
        self._message: int | None = None  # output index of the message, once announced
        self._calls: dict[int, int] = {}  # call index -> output index
        self._announced = 0

    def piece(self, piece: Piece) -> str:
        ev = self._events
        if isinstance(piece, TextPiece):
            sent = "" if self._message is not None else self._open_message()
            assert self._message is not None
            return sent + ev.text_delta(message_id(self._key), self._message, piece.text)
        if isinstance(piece, CallStart):
            self._calls[piece.index] = index = self._announced
            self._announced += 1
            item = FunctionCallOutput(
                id=call_item_id(self._key, piece.index),
                call_id=piece.id,
                name=piece.name,
                arguments="",
                status="in_progress",
            )
            return ev.item_added(index, item)
        assert isinstance(piece, ArgumentsPiece)
        item_id = call_item_id(self._key, piece.index)
        return ev.arguments_delta(item_id, self._calls[piece.index], piece.text)

    def _open_message(self) -> str:
        self._message = self._announced
        self._announced += 1
        item = OutputMessage(id=message_id(self._key), status="in_progress", content=[])
        return self._events.item_added(self._message, item) + self._events.part_added(
            item.id, self._message, OutputText(text="")
        )

    def close(self, output: list[OutputItem]) -> str:
        """Done events of every item, in output order (an empty message is announced
        here: a response always has an item)."""
        ev = self._events
        sent = ""
        for i, item in enumerate(output):
            if isinstance(item, OutputMessage):
                if self._message is None:
                    sent += self._open_message()
                part = item.content[0]
                sent += ev.text_done(item.id, i, part.text)
                for a, annotation in enumerate(part.annotations):
                    sent += ev.annotation_added(item.id, i, a, annotation)
                sent += ev.part_done(item.id, i, part) + ev.item_done(i, item)
            else:
                sent += ev.arguments_done(item.id, i, item.name, item.arguments)
                sent += ev.item_done(i, item)
        return sent
