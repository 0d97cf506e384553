"""``CallExtractor``: one choice's output text, as it comes, into text and tool calls.

Three ways, by the request's ``ToolMode``:

- no tools, or ``none``: everything is text, passed on as it comes;
- ``auto``: an output that begins like a call (``{``, ``[`` or a call tag) is held until
  the choice ends and then parsed whole (``tool_format.parse_calls``): calls if it is
  nothing but valid calls, else the held text. A call that was announced cannot be
  taken back, so nothing is announced before the whole output is known. Any other
  output is text and streams as it comes;
- ``required`` and named: the engine's grammar (``ToolSet.constraint``) makes the output
  a JSON array of ``{"name", "parameters"}`` objects, so each call is announced as soon
  as its name is complete and its arguments stream as they are written.

The same extractor serves whole responses (fed everything, then finished).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

from gateway.model_io.tool_format import might_be_call, parse_calls
from gateway.model_io.tool_set import ToolMode, ToolSet


@dataclass(frozen=True)
class TextPiece:
    text: str


@dataclass(frozen=True)
class CallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True)
class ArgumentsPiece:
    index: int
    text: str


Piece = TextPiece | CallStart | ArgumentsPiece


def call_id() -> str:
    """An id, not a secret (as request ids): ``call_`` and 24 letters and digits."""
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    return "call_" + "".join(random.choices(alphabet, k=24))


@dataclass
class CollectedCall:
    id: str
    name: str
    arguments: str = ""


@dataclass
class CallExtractor:
    tools: ToolSet | None
    calls: list[CollectedCall] = field(default_factory=list)
    text: str = ""
    """The text pieces so far, joined (the whole response's ``content``)."""
    _held: str = ""
    _holding: bool | None = None  # auto: None until the output's first visible character
    _scanner: CallArrayScanner | None = None

    def __post_init__(self) -> None:
        if self.tools is not None and self.tools.constraint() is not None:
            self._scanner = CallArrayScanner()

    def feed(self, text: str) -> list[Piece]:
        if not text:
            return []
        if self._scanner is not None:
            return self._collect(self._scanner.feed(text))
        if self.tools is None or not self.tools.active or self._holding is False:
            return self._collect([TextPiece(text)])
        self._held += text
        if self._holding is None:
            head = self._held.lstrip()
            if not head or (might_be_call(head[:16]) and len(head) < 16):
                return []
            self._holding = might_be_call(head[:16])
            if not self._holding:
                held, self._held = self._held, ""
                return self._collect([TextPiece(held)])
        return []

    def finish(self) -> list[Piece]:
        """What was held back: the calls, or the text when it was not calls."""
        held, self._held = self._held, ""
        if not held or self.tools is None:
            return []
        parsed = parse_calls(held, self.tools)
        if parsed is None:
            return self._collect([TextPiece(held)])
        pieces: list[Piece] = []
        for i, call in enumerate(parsed):
            pieces += [CallStart(i, call_id(), call.name), ArgumentsPiece(i, call.arguments)]
        return self._collect(pieces)

    @property
    def called(self) -> bool:
        return bool(self.calls)

    def finish_reason(self, engine_reason: str) -> str:
        """``tool_calls`` when calls end the turn (OpenAI says ``stop`` for a named call)."""
        if self.calls and engine_reason == "stop" and self.tools is not None:
            return "stop" if self.tools.mode is ToolMode.NAMED else "tool_calls"
        return engine_reason

    def _collect(self, pieces: list[Piece]) -> list[Piece]:
        for piece in pieces:
            if isinstance(piece, TextPiece):
                self.text += piece.text
            elif isinstance(piece, CallStart):
                self.calls.append(CollectedCall(piece.id, piece.name))
            else:
                self.calls[piece.index].arguments += piece.text
        return pieces


class CallArrayScanner:
    """Reads ``[{"name": "f", "parameters": {...}}, ...]`` as it is written: a call
    starts when its name string is complete, its arguments are the raw text of its
    ``parameters`` value, passed on as it comes. Whitespace between tokens is allowed
    (the grammar may write some); the keys may come in either order."""

    def __init__(self) -> None:
        self._depth = 0
        self._in_string = False
        self._escape = False
        self._string = ""
        self._key: str | None = None
        self._expect_value = False
        self._capturing = False  # inside the parameters value of the current call
        self._capture_depth = 0
        self._pending_args = ""  # parameters written before the name (key order swapped)
        self._index = -1
        self._named = False
        self._cap_string = self._cap_escape = self._cap_started = False

    def feed(self, text: str) -> list[Piece]:
        pieces: list[Piece] = []
        args = ""
        for ch in text:
            if self._capturing:
                if not self._cap_started and ch.isspace():
                    continue
                self._cap_started = True
                args += ch
                if self._track_capture(ch):
                    self._capturing = False
                    self._flush_args(args, pieces)
                    args = ""
            elif self._in_string:
                self._string_char(ch, pieces)
            elif not ch.isspace():
                self._structure_char(ch)
        if self._capturing and args:
            self._flush_args(args, pieces)
        return pieces

    def _string_char(self, ch: str, pieces: list[Piece]) -> None:
        """One character inside a JSON string (a key or a name)."""
        if self._escape:
            self._escape = False
            self._string += ch
        elif ch == "\\":
            self._escape = True
            self._string += ch
        elif ch == '"':
            self._in_string = False
            self._string_done(pieces)
        else:
            self._string += ch

    def _structure_char(self, ch: str) -> None:
        """One non-space character outside strings: nesting, a key's colon, a comma."""
        if ch == '"':
            self._in_string, self._string = True, ""
            return
        if ch in "[{":
            self._depth += 1
            if self._depth == 2 and ch == "{":
                self._index += 1
                self._named = False
                self._pending_args = ""
                self._key = None
        elif ch in "]}":
            self._depth -= 1
        elif ch == ":":
            self._expect_value = True
            if self._depth == 2 and self._key == "parameters":
                self._capturing, self._capture_depth = True, 0
                self._cap_string = self._cap_escape = False
                self._cap_started = False
            return
        elif ch == ",":
            self._key = None
        self._expect_value = False

    def _string_done(self, pieces: list[Piece]) -> None:
        if self._depth != 2:
            return
        if self._expect_value:
            if self._key == "name" and not self._named:
                self._named = True
                pieces.append(CallStart(self._index, call_id(), self._decoded(self._string)))
                if self._pending_args:
                    pieces.append(ArgumentsPiece(self._index, self._pending_args))
                    self._pending_args = ""
            self._expect_value = False
        else:
            self._key = self._decoded(self._string)

    def _flush_args(self, args: str, pieces: list[Piece]) -> None:
        if self._named:
            pieces.append(ArgumentsPiece(self._index, args))
        else:
            self._pending_args += args

    def _track_capture(self, ch: str) -> bool:
        """Follow the parameters value; True when it has just ended."""
        if self._cap_string:
            if self._cap_escape:
                self._cap_escape = False
            elif ch == "\\":
                self._cap_escape = True
            elif ch == '"':
                self._cap_string = False
            return False
        if ch.isspace():
            return False
        if ch == '"':
            self._cap_string = True
        elif ch in "[{":
            self._capture_depth += 1
        elif ch in "]}":
            self._capture_depth -= 1
        return self._capture_depth == 0 and ch in "]}"

    @staticmethod
    def _decoded(raw: str) -> str:
        try:
            return str(json.loads(f'"{raw}"'))
        except ValueError:
            return raw
