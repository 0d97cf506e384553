"""Reads one chat completion response (JSON or SSE) into timings, tokens and a verdict.

Pure functions over status, bytes and a clock, so they are tested without a server or
Locust. A request fails on a non-2xx status, an unreadable body, an SSE ``error``
event, or a stream that ends without ``data: [DONE]``.

Client-side timings of a stream: time to first token (TTFT) is from sending the
request to the first chunk with content; time per output token (TPOT) is the time
from the first to the last content chunk over the tokens after the first. Token counts
come from ``usage`` (``stream_options.include_usage``) when the server sends it,
otherwise one token per content chunk.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE = 200


@dataclass(frozen=True)
class ChatOutcome:
    """What one request measured. ``error`` is None when it succeeded."""

    latency_s: float
    output_tokens: int = 0
    ttft_s: float | None = None
    tpot_s: float | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def error_message(payload: Any) -> str | None:
    """The message of an OpenAI error body (``{"error": {...}}``), else None."""
    if not isinstance(payload, dict) or "error" not in payload:
        return None
    error = payload["error"]
    if isinstance(error, dict):
        return str(error.get("message") or error.get("type") or "error")
    return str(error)


def http_failure(status: int, body: bytes) -> str:
    """A short, stable description of a non-2xx answer (Locust groups failures by it)."""
    try:
        message = error_message(json.loads(body))
    except ValueError:
        message = None
    detail = message if message is not None else body.decode("utf-8", "replace")
    return _short(f"HTTP {status}: {detail}") if detail.strip() else f"HTTP {status}"


def _completion_tokens(payload: dict[str, Any]) -> int | None:
    usage = payload.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
        return int(usage["completion_tokens"])
    return None


def read_completion(body: bytes, started: float, clock: Callable[[], float]) -> ChatOutcome:
    """A non-streamed ``chat.completion`` body (status already 2xx)."""
    latency = clock() - started
    try:
        payload = json.loads(body)
    except ValueError:
        return ChatOutcome(latency, error="response is not JSON")
    message = error_message(payload)
    if message is not None:
        return ChatOutcome(latency, error=_short(f"error body: {message}"))
    if not isinstance(payload, dict) or not payload.get("choices"):
        return ChatOutcome(latency, error="response has no choices")
    tokens = _completion_tokens(payload)
    if tokens is None:
        return ChatOutcome(latency, error="response has no usage.completion_tokens")
    return ChatOutcome(latency, output_tokens=tokens)


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines of a byte stream as chunks arrive (LF, CRLF or CR ends a line)."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        # A trailing "\r" may be half of "\r\n": keep it until the next chunk.
        complete, cut = (pending[:-1], pending[-1:]) if pending.endswith(b"\r") else (pending, b"")
        *lines, rest = complete.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        yield from lines
        pending = rest + cut
    if pending:
        yield pending.rstrip(b"\r")


def sse_data(lines: Iterable[bytes]) -> Iterator[str]:
    """The ``data`` of each server-sent event; multi-line data is joined with newlines."""
    data: list[str] = []
    for raw in lines:
        line = raw.decode("utf-8")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
        # Comments (":") and other fields (event, id, retry) carry nothing we measure.
    if data:
        yield "\n".join(data)


def _has_content(payload: dict[str, Any]) -> bool:
    for choice in payload.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and delta.get("content"):
            return True
    return False


def read_stream(lines: Iterable[bytes], started: float, clock: Callable[[], float]) -> ChatOutcome:
    """An SSE body of ``chat.completion.chunk`` events (status already 2xx)."""
    first: float | None = None
    last: float | None = None
    chunks = 0
    usage_tokens: int | None = None
    done = False
    for data in sse_data(lines):
        now = clock()
        if data == "[DONE]":
            done = True
            break
        try:
            payload = json.loads(data)
        except ValueError:
            return ChatOutcome(now - started, error="stream event is not JSON")
        message = error_message(payload)
        if message is not None:
            return ChatOutcome(now - started, error=_short(f"stream error event: {message}"))
        if not isinstance(payload, dict):
            return ChatOutcome(now - started, error="stream event is not an object")
        if _has_content(payload):
            first = now if first is None else first
            last = now
            chunks += 1
        reported = _completion_tokens(payload)
        usage_tokens = usage_tokens if reported is None else reported
    latency = clock() - started
    if not done:
        return ChatOutcome(latency, error="stream ended without [DONE]")
    tokens = usage_tokens if usage_tokens is not None else chunks
    ttft = None if first is None else first - started
    tpot = None
    if first is not None and last is not None and chunks >= 2 and tokens >= 2:
        tpot = (last - first) / (tokens - 1)
    return ChatOutcome(latency, output_tokens=tokens, ttft_s=ttft, tpot_s=tpot)
