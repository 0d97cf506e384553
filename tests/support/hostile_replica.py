"""A vLLM-like replica that answers exactly what a test scripts, byte for byte.

The remote engine treats a replica as a trust boundary; this fake plays the other side:
malformed stream events, lines that never end, answers far larger than any real one,
error bodies that name internal hosts, adapter names registered from other paths. It is
a plain ``asyncio`` HTTP/1.1 server (no framework in the way of the bytes), run on the
test's own event loop. Each answer is an ``Answer``: a status, a content type and the
body as pieces, sent as chunks one by one (a piece may end mid-line or mid-event).

    replica = await HostileReplica.start()
    replica.completions = lambda body: Answer.sse([{"choices": "zz"}])
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gateway.engine.remote import RemoteEngine
from gateway.engine.remote.startup import build_remote_engine, discover_base
from gateway.settings import RemoteEngineSettings

BASE = "fake-base"
MAX_MODEL_LEN = 333


@dataclass
class Answer:
    status: int = 200
    pieces: list[bytes] = field(default_factory=list)
    content_type: str = "application/json"

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Answer:
        return cls(status, [json.dumps(payload).encode()])

    @classmethod
    def sse(cls, events: list[Any], *, done: bool = True) -> Answer:
        """Each event as one ``data:`` line (a str or bytes is sent as it is)."""
        pieces = [e if isinstance(e, bytes) else f"data: {_dumps(e)}\n\n".encode() for e in events]
        if done:
            pieces.append(b"data: [DONE]\n\n")
        return cls(200, pieces, "text/event-stream")


def _dumps(event: Any) -> str:
    return event if isinstance(event, str) else json.dumps(event)


def good_events(body: dict[str, Any], tokens: int | None = None) -> list[Any]:
    """What vLLM streams for ``body``: a token per event per choice, then usage."""
    count = min(tokens if tokens is not None else body["max_tokens"], body["max_tokens"])
    events: list[Any] = []
    for k in range(count):
        for i in range(body["n"]):
            choice = {
                "index": i,
                "text": f"t{k} ",
                "token_ids": [100 + k],
                "finish_reason": "length" if k == count - 1 else None,
            }
            events.append({"id": "cmpl-h", "object": "text_completion", "choices": [choice]})
    usage = {
        "prompt_tokens": len(body["prompt"]),
        "completion_tokens": count * body["n"],
        "total_tokens": len(body["prompt"]) + count * body["n"],
    }
    events.append({"id": "cmpl-h", "choices": [], "usage": usage})
    return events


Script = Callable[[dict[str, Any]], Answer]


class HostileReplica:
    """Serves /health, /v1/models, /v1/load_lora_adapter, /v1/unload_lora_adapter and
    /v1/completions. ``completions`` and ``models`` are scripts (request body in, answer
    out); ``adapters`` maps names to the path (``root``) /v1/models lists them with."""

    def __init__(self) -> None:
        self.adapters: dict[str, str] = {}
        self.completions: Script = lambda body: Answer.sse(good_events(body))
        self.models: Callable[[], Answer] = self.listed_models
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        """The headers of each /v1/completions request (names lowercased)."""
        self.load_calls: list[str] = []
        self.sent = 0
        """Body bytes the client took (written and drained)."""
        self.url = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls) -> HostileReplica:
        replica = cls()
        replica._server = await asyncio.start_server(replica._serve, "127.0.0.1", 0)
        port = replica._server.sockets[0].getsockname()[1]
        replica.url = f"http://127.0.0.1:{port}"
        return replica

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()

    def listed_models(self) -> Answer:
        data = [
            {"id": BASE, "root": "/models/base", "parent": None, "max_model_len": MAX_MODEL_LEN}
        ]
        data += [{"id": n, "root": p, "parent": BASE} for n, p in self.adapters.items()]
        return Answer.json({"object": "list", "data": data})

    def _answer(self, method: str, path: str, body: Any) -> Answer:
        if path == "/health":
            return Answer(200, [], "text/plain")
        if path == "/v1/models":
            return self.models()
        if path == "/v1/load_lora_adapter":
            name = body["lora_name"]
            if name in self.adapters:
                message = f"The lora adapter '{name}' has already been loaded."
                return Answer.json({"error": {"message": message, "code": 400}}, 400)
            self.load_calls.append(name)
            self.adapters[name] = body["lora_path"]
            return Answer(200, [b"Success"], "text/plain")
        if path == "/v1/unload_lora_adapter":
            self.adapters.pop(body["lora_name"], None)
            return Answer(200, [b"Success"], "text/plain")
        if path == "/v1/completions" and method == "POST":
            self.bodies.append(body)
            return self.completions(body)
        return Answer.json({"error": {"message": "not found", "code": 404}}, 404)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = dict(
                    (k.strip().lower(), v.strip())
                    for k, v in (h.split(":", 1) for h in header_lines if ":" in h)
                )
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = json.loads(raw) if raw else None
                if path == "/v1/completions":
                    self.headers.append(headers)
                await self._send(writer, self._answer(method, path, body))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, answer: Answer) -> None:
        writer.write(
            f"HTTP/1.1 {answer.status} X\r\ncontent-type: {answer.content_type}\r\n"
            "transfer-encoding: chunked\r\n\r\n".encode()
        )
        for piece in answer.pieces:
            if piece:
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                self.sent += len(piece)
        writer.write(b"0\r\n\r\n")
        await writer.drain()


async def remote_engine(replica: HostileReplica) -> RemoteEngine:
    """A remote engine over ``replica`` alone, its base model learnt from it."""
    settings = RemoteEngineSettings(
        kind="remote",
        replicas=[replica.url],  # type: ignore[list-item]
        health_interval=60,  # tests call refresh() themselves
        connect_timeout=1,
        first_token_timeout=5,
        read_timeout=5,
    )
    remote = build_remote_engine(settings)
    try:
        await discover_base(remote, settings)
    except BaseException:
        await remote.shutdown()
        raise
    return remote
