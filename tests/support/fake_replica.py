"""A scripted vLLM OpenAI server (``FakeReplica``) served on a real port, and helpers
to build remote engine settings and generation requests against it."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.engine.interface import (
    AdapterRef,
    GenerationOutput,
    GenerationParams,
    GenerationRequest,
)
from gateway.engine.remote import RemoteEngine
from gateway.settings import RemoteEngineSettings
from tests.support.engine_fixtures import free_port

BASE = "fake-base"
MAX_LEN = 333


class FakeReplica:
    """One fake vLLM server's state; tests flip its failure switches."""

    def __init__(self) -> None:
        self.reset()
        self.app = Starlette(
            routes=[
                Route("/health", self.health),
                Route("/v1/models", self.models),
                Route("/v1/load_lora_adapter", self.load, methods=["POST"]),
                Route("/v1/unload_lora_adapter", self.unload, methods=["POST"]),
                Route("/v1/completions", self.completions, methods=["POST"]),
            ]
        )
        self.url = ""

    def reset(self) -> None:
        # Streams left over from an earlier test (a replica still sleeping past a deadline
        # the gateway gave up on) must not touch this test's counters when they end.
        self.epoch = getattr(self, "epoch", 0) + 1
        self.down = False
        self.api_key: str | None = None
        self.adapters: dict[str, str] = {}
        self.load_calls: list[str] = []
        self.unload_calls: list[str] = []
        self.bodies: list[dict[str, Any]] = []
        self.fail_before_first: int | None = None  # HTTP status
        self.error_event_after: int | None = None  # tokens, then an error event
        self.first_delay = 0.0
        self.token_delay = 0.0
        self.tokens = 4
        self.open_streams = 0
        self.disconnected = 0

    def restart(self) -> None:
        """What a restarted vLLM server forgets: every adapter loaded at runtime."""
        self.adapters.clear()

    def _refused(self, request: Request) -> Response | None:
        if self.down:
            return JSONResponse({"error": {"message": "down", "code": 503}}, status_code=503)
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": {"message": "bad key", "code": 401}}, status_code=401)
        return None

    async def health(self, request: Request) -> Response:
        return self._refused(request) or Response(status_code=200)

    async def models(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        data = [{"id": BASE, "root": "/models/base", "parent": None, "max_model_len": MAX_LEN}]
        data += [{"id": n, "root": p, "parent": BASE} for n, p in self.adapters.items()]
        return JSONResponse({"object": "list", "data": data})

    async def load(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        name, path = body["lora_name"], body["lora_path"]
        if name in self.adapters:
            return _error(400, f"The lora adapter '{name}' has already been loaded.")
        if "missing" in path:
            return _error(404, f"Loading lora {name} failed: No adapter found for {path}")
        self.load_calls.append(name)
        self.adapters[name] = path
        return Response(f"Success: LoRA adapter '{name}' added successfully.")

    async def unload(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        name = (await request.json())["lora_name"]
        self.unload_calls.append(name)
        if self.adapters.pop(name, None) is None:
            return _error(404, f"The lora adapter '{name}' cannot be found.")
        return Response("Success")

    async def completions(self, request: Request) -> Response:
        if (refused := self._refused(request)) is not None:
            return refused
        body = await request.json()
        self.bodies.append(body)
        if body["model"] != BASE and body["model"] not in self.adapters:
            return _error(404, f"The model `{body['model']}` does not exist.")
        if body.get("max_tokens", 16) > 1000:
            return _error(400, "max_tokens is too large for this fake")
        if self.fail_before_first is not None:
            return _error(self.fail_before_first, "injected failure")
        return StreamingResponse(self._stream(body), media_type="text/event-stream")

    async def _stream(self, body: dict[str, Any]) -> AsyncIterator[str]:
        epoch = self.epoch
        self.open_streams += 1
        try:
            await asyncio.sleep(self.first_delay)
            count = min(self.tokens, body["max_tokens"])
            for k in range(count):
                if self.error_event_after is not None and k >= self.error_event_after:
                    error = {"message": "injected mid-stream failure", "code": 500}
                    yield _sse({"error": error})
                    yield "data: [DONE]\n\n"
                    return
                for i in range(body["n"]):
                    yield _sse(_chunk(body, i, k, count))
                await asyncio.sleep(self.token_delay)
            usage = {
                "prompt_tokens": len(body["prompt"]),
                "completion_tokens": count * body["n"],
                "prompt_tokens_details": {"cached_tokens": 3},
            }
            yield _sse({"id": "cmpl-x", "choices": [], "usage": usage})
            yield "data: [DONE]\n\n"
        except (asyncio.CancelledError, GeneratorExit):
            if epoch == self.epoch:
                self.disconnected += 1
            raise
        finally:
            if epoch == self.epoch:
                self.open_streams -= 1


def _error(status: int, message: str) -> Response:
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"


def _chunk(body: dict[str, Any], index: int, k: int, count: int) -> dict[str, Any]:
    text = f"{body['model']}:{index}:{k} "
    choice: dict[str, Any] = {
        "index": index,
        "text": text,
        "token_ids": [1000 + 10 * index + k],
        "finish_reason": "length" if k == count - 1 else None,
    }
    if k == 0:
        choice["prompt_token_ids"] = body["prompt"]
    if body.get("logprobs") is not None:
        top = {text: -0.5, **{f"alt{j}": -1.0 - j for j in range(1, body["logprobs"] + 1)}}
        choice["logprobs"] = {
            "tokens": [text],
            "token_logprobs": [-0.5],
            "top_logprobs": [top],
            "text_offset": [0],
        }
    return {"id": "cmpl-x", "object": "text_completion", "choices": [choice]}


class ServedReplica:
    """A fake replica behind uvicorn in its own thread and loop."""

    def __init__(self) -> None:
        self.fake = FakeReplica()
        self.port = free_port()
        self.fake.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.fake.app, host="127.0.0.1", port=self.port, log_level="error")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "fake replica did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def remote_settings(fakes: list[FakeReplica], **overrides: Any) -> RemoteEngineSettings:
    data: dict[str, Any] = {
        "kind": "remote",
        "replicas": [f.url for f in fakes],
        "health_interval": 60,  # tests call refresh() themselves
        "connect_timeout": 1,
        "first_token_timeout": 5,
        "read_timeout": 5,
        "max_replicas_per_adapter": 2,
        "spill_threshold": 2,
    }
    data.update(overrides)
    return RemoteEngineSettings(**data)


def adapter(name: str = "pirate", version: str = "v1", lora_id: int = 7) -> AdapterRef:
    return AdapterRef(name=name, lora_id=lora_id, path=f"/adapters/{name}", version=version)


def gen_request(
    params: GenerationParams | None = None,
    *,
    lora: AdapterRef | None = None,
    salt: str | None = None,
) -> GenerationRequest:
    return GenerationRequest(
        request_id="req-1",
        prompt_token_ids=[1, 2, 3],
        params=params or GenerationParams(max_tokens=4),
        adapter=lora,
        cache_salt=salt,
    )


async def collect(remote: RemoteEngine, request: GenerationRequest) -> list[GenerationOutput]:
    return [out async for out in remote.generate(request)]
