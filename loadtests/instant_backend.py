"""An instant fake OpenAI/vLLM server for overhead benchmarks: it answers at once.

A raw ``asyncio.Protocol`` speaking just enough HTTP/1.1 (keep-alive, Content-Length
request bodies, chunked SSE responses) that the server costs next to nothing, so
what a benchmark sees in front of it is the gateway's own cost. It serves:

- ``GET /health`` and ``GET /v1/models`` (the base model with ``max_model_len``):
  what loragate's replica probes read;
- ``POST /v1/completions`` as vLLM does for loragate's remote engine: token-id prompt,
  ``return_token_ids`` (``token_ids`` per choice), ``stream_options.include_usage``;
- ``POST /v1/chat/completions`` (streamed or not): what LiteLLM's proxy calls.

Each answer has ``max_tokens`` tokens (default ``DEFAULT_TOKENS``, at most
``MAX_TOKENS``), all written in one go; answers are cached by their shape, so a
request costs a JSON parse and a write. Run it alone with
``python -m loadtests.instant_backend --port 8100``. Concurrency rule: one event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable, Coroutine
from contextlib import suppress
from typing import Any

MODEL = "bench-base"
MAX_MODEL_LEN = 2048
DEFAULT_TOKENS = 8
MAX_TOKENS = 64
FIRST_TOKEN_ID = 1000


def _chunk(payload: Any) -> bytes:
    data = b"data: " + (payload if isinstance(payload, bytes) else _dumps(payload)) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def completion_events(model: str, prompt: list[int], tokens: int, usage: bool) -> list[Any]:
    """vLLM 0.32's stream for a token-id prompt with ``return_token_ids``."""
    events: list[Any] = []
    for i in range(tokens):
        last = i == tokens - 1
        choice: dict[str, Any] = {
            "index": 0,
            "text": f" t{i}",
            "logprobs": None,
            "finish_reason": "length" if last else None,
            "stop_reason": None,
            "token_ids": [FIRST_TOKEN_ID + i],
        }
        if i == 0:
            choice["prompt_token_ids"] = prompt
        events.append(
            {"id": "cmpl-bench", "object": "text_completion", "created": 0, "model": model,
             "choices": [choice], "usage": None}
        )  # fmt: skip
    if usage:
        events.append(
            {"id": "cmpl-bench", "object": "text_completion", "created": 0, "model": model,
             "choices": [], "usage": _usage(len(prompt), tokens)}
        )  # fmt: skip
    return events


def chat_events(model: str, prompt_tokens: int, tokens: int, usage: bool) -> list[Any]:
    base = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 0, "model": model}
    events: list[Any] = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                              "logprobs": None, "finish_reason": None}]}
    ]  # fmt: skip
    for i in range(tokens):
        last = i == tokens - 1
        events.append(
            {**base, "choices": [{"index": 0, "delta": {"content": f" t{i}"}, "logprobs": None,
                                  "finish_reason": "length" if last else None}]}
        )  # fmt: skip
    if usage:
        events.append({**base, "choices": [], "usage": _usage(prompt_tokens, tokens)})
    return events


def chat_message(model: str, prompt_tokens: int, tokens: int) -> dict[str, Any]:
    text = "".join(f" t{i}" for i in range(tokens))
    return {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": "length",
            }
        ],
        "usage": _usage(prompt_tokens, tokens),
    }


def _chat_prompt_tokens(messages: Any) -> int:
    """A rough count (4 characters a token): an instant server has no tokenizer."""
    if not isinstance(messages, list):
        return 1
    chars = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
    return max(1, chars // 4)


def _response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found"}.get(status, b"Error")
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n\r\n%s" % (
        status,
        reason,
        content_type.encode(),
        len(body),
        body,
    )


SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def _streamed(events: list[Any]) -> bytes:
    return SSE_HEAD + b"".join(_chunk(e) for e in events) + _chunk(b"[DONE]") + b"0\r\n\r\n"


class InstantBackend:
    """Builds each answer once per shape (model, prompt, tokens, stream, usage)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[Any, ...], bytes] = {}
        self.requests = 0

    def answer(self, method: str, path: str, body: bytes) -> bytes:
        self.requests += 1
        if method == "GET" and path == "/health":
            return b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
        if method == "GET" and path == "/v1/models":
            card = {"id": MODEL, "object": "model", "root": MODEL, "parent": None,
                    "max_model_len": MAX_MODEL_LEN}  # fmt: skip
            return _response(200, _dumps({"object": "list", "data": [card]}))
        if method != "POST" or path not in ("/v1/completions", "/v1/chat/completions"):
            return _response(404, _dumps({"error": {"message": f"no route {path}", "code": 404}}))
        try:
            request = json.loads(body)
        except ValueError:
            return _response(400, _dumps({"error": {"message": "bad JSON", "code": 400}}))
        model = str(request.get("model") or MODEL)
        tokens = min(int(request.get("max_tokens") or DEFAULT_TOKENS), MAX_TOKENS)
        stream = bool(request.get("stream"))
        usage = bool((request.get("stream_options") or {}).get("include_usage"))
        if path == "/v1/completions":
            prompt = request.get("prompt")
            ids = prompt if isinstance(prompt, list) else [0] * max(1, len(str(prompt)) // 4)
            key: tuple[Any, ...] = ("c", model, tuple(ids), tokens, stream, usage)
        else:
            key = (
                "chat",
                model,
                _chat_prompt_tokens(request.get("messages")),
                tokens,
                stream,
                usage,
            )
        cached = self._cache.get(key)
        if cached is None:
            cached = self._build(key)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = cached
        return cached

    @staticmethod
    def _build(key: tuple[Any, ...]) -> bytes:
        kind, model, prompt, tokens, stream, usage = key
        if kind == "c":
            events = completion_events(model, list(prompt), tokens, usage)
            if stream:
                return _streamed(events)
            text = "".join(e["choices"][0]["text"] for e in events if e["choices"])
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": "length",
                      "token_ids": [FIRST_TOKEN_ID + i for i in range(tokens)]}  # fmt: skip
            return _response(
                200,
                _dumps({"id": "cmpl-bench", "object": "text_completion", "created": 0,
                        "model": model, "choices": [choice],
                        "usage": _usage(len(prompt), tokens)}),
            )  # fmt: skip
        if stream:
            return _streamed(chat_events(model, prompt, tokens, usage))
        return _response(200, _dumps(chat_message(model, prompt, tokens)))


class _Connection(asyncio.Protocol):
    """One keep-alive connection: requests are parsed from the buffer as they complete."""

    def __init__(self, backend: InstantBackend) -> None:
        self.backend = backend
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").split("\r\n")
            method, path, _ = head[0].split(" ", 2)
            length = 0
            close = False
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(self.backend.answer(method, path.split("?", 1)[0], body))
            if close:
                self.transport.close()
                self.transport = None

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(host: str, port: int, ready: asyncio.Event | None = None) -> None:
    backend = InstantBackend()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(backend), host, port, backlog=1024)
    if ready is not None:
        ready.set()
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    run: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    with suppress(KeyboardInterrupt):
        run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
