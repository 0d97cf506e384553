"""A fast fake of one ``vllm serve`` replica, as a process: what ``engine.kind: remote``
calls (``/health``, ``/v1/models``, runtime LoRA load/unload, streamed
``/v1/completions`` with token ids), at a speed set on the command line.

Run: ``python -m loadtests.paced_replica --port 8200 --token-delay 0.02 --tokens 16``.
Used by the drain and rolling-restart tests and load scenarios, where the gateways are real
``loragate serve`` processes and the engine's cost would only slow them down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

BASE = "fake-base"


def build_app(
    token_delay: float, tokens: int, first_delay: float = 0.0, max_model_len: int = 1024
) -> Starlette:
    adapters: dict[str, str] = {}

    async def health(_: Request) -> Response:
        return Response(status_code=200)

    async def models(_: Request) -> Response:
        data: list[dict[str, Any]] = [
            {"id": BASE, "root": BASE, "parent": None, "max_model_len": max_model_len}
        ]
        data += [{"id": n, "root": p, "parent": BASE} for n, p in adapters.items()]
        return JSONResponse({"object": "list", "data": data})

    async def load(request: Request) -> Response:
        body = await request.json()
        adapters[body["lora_name"]] = body["lora_path"]
        return Response("Success")

    async def unload(request: Request) -> Response:
        adapters.pop((await request.json())["lora_name"], None)
        return Response("Success")

    async def completions(request: Request) -> Response:
        body = await request.json()
        return StreamingResponse(stream(body), media_type="text/event-stream")

    async def stream(body: dict[str, Any]) -> AsyncIterator[str]:
        count = min(tokens, int(body.get("max_tokens") or tokens))
        n = int(body.get("n") or 1)
        await asyncio.sleep(first_delay)  # the prompt's prefill
        for k in range(count):
            await asyncio.sleep(token_delay)
            for i in range(n):
                choice = {
                    "index": i,
                    "text": f"t{k} ",
                    "token_ids": [1000 + k],
                    "finish_reason": "length" if k == count - 1 else None,
                }
                yield f"data: {json.dumps({'id': 'cmpl-f', 'choices': [choice]})}\n\n"
        usage = {"prompt_tokens": len(body.get("prompt") or []), "completion_tokens": count * n}
        yield f"data: {json.dumps({'id': 'cmpl-f', 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/load_lora_adapter", load, methods=["POST"]),
            Route("/v1/unload_lora_adapter", unload, methods=["POST"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-delay", type=float, default=0.02)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--first-delay", type=float, default=0.0, help="prefill, seconds")
    args = parser.parse_args()
    app = build_app(args.token_delay, args.tokens, args.first_delay)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
