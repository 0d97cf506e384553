"""A tiny OpenAI-like chat server for load-test tests: it misbehaves on request.

The requested ``model`` picks the behaviour: ``good`` answers properly (streamed
chunks with a pause before the first, ``usage`` when asked, ``[DONE]``), ``no-done``
ends its stream without ``[DONE]``, ``error-event`` sends an SSE error event,
``broken-json`` sends an unreadable event, and any other model gets a 404 error body.
Run: ``python tests/support/fake_openai_server.py --port 8123``.
"""

from __future__ import annotations

import argparse
import json
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FIRST_TOKEN_DELAY_S = 0.05
TOKEN_INTERVAL_S = 0.02
KNOWN_MODELS = ("good", "no-done", "error-event", "broken-json")


def chunk(content: str | None, usage: dict[str, int] | None = None) -> dict[str, Any]:
    choices = [] if content is None else [{"index": 0, "delta": {"content": content}}]
    return {"object": "chat.completion.chunk", "choices": choices, "usage": usage}


class FakeChatHandler(BaseHTTPRequestHandler):
    """Serves GET /v1/models and POST /v1/chat/completions over HTTP/1.1 (chunked SSE)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send_json(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _event(self, payload: Any) -> None:
        text = payload if isinstance(payload, str) else json.dumps(payload)
        self._send_chunk(f"data: {text}\n\n".encode())

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": m} for m in KNOWN_MODELS]})
        else:
            self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        request = json.loads(self.rfile.read(length))
        model, tokens = request["model"], int(request.get("max_tokens") or 4)
        if model not in KNOWN_MODELS:
            message = f"The model `{model}` does not exist."
            self._send_json(404, {"error": {"message": message, "type": "NotFoundError"}})
            return
        usage = {"prompt_tokens": 10, "completion_tokens": tokens, "total_tokens": 10 + tokens}
        if not request.get("stream"):
            time.sleep(FIRST_TOKEN_DELAY_S)
            reply = {"role": "assistant", "content": "x" * tokens}
            choice = {"index": 0, "message": reply, "finish_reason": "length"}
            self._send_json(200, {"object": "chat.completion", "choices": [choice], "usage": usage})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self._stream(
            model, tokens, usage, bool((request.get("stream_options") or {}).get("include_usage"))
        )
        self._send_chunk(b"")

    def _stream(self, model: str, tokens: int, usage: dict[str, int], include_usage: bool) -> None:
        self._event(
            {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": {"role": "assistant"}}],
            }
        )
        time.sleep(FIRST_TOKEN_DELAY_S)
        for i in range(tokens):
            if i:
                time.sleep(TOKEN_INTERVAL_S)
            self._event(chunk("x"))
            if model == "error-event":
                self._event({"error": {"message": "engine failed", "type": "InternalServerError"}})
                self._event("[DONE]")
                return
            if model == "broken-json":
                self._event("{not json")
                return
        if include_usage:
            self._event(chunk(None, usage))
        if model != "no-done":
            self._event("[DONE]")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), FakeChatHandler)
    server.daemon_threads = True
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
