"""``GenerationRoute``: the generation endpoints without FastAPI's per-request
dependency solving.

FastAPI solves a route's dependency tree on every request, parses the JSON body into
Python objects and then validates them: for a chat completion that is about a quarter
of the gateway's own CPU time per request (profiled with cProfile on process time,
``loadtests/bench_overhead.py``'s load). The endpoint functions of this route class
keep their usual signatures (so the OpenAPI document describes their body, and they
read like any route), but requests reach them through one small handler:

- the state: ``app.state.gateway`` (503 while the gateway starts);
- ``caller``: ``Gatekeeper.authenticate`` on the ``Authorization`` header (401 first,
  before the body is looked at, in FastAPI's own order);
- ``body``: validated from the raw bytes by pydantic's JSON parser (errors rendered
  like FastAPI's own body errors: ``gateway.api.json_body``);
- ``pipeline``: the state's, and ``request`` itself.

An endpoint asking for anything else is refused when the route is built. The route's
ASGI app is that handler and the response, nothing around them: FastAPI's own wrapper
adds two exit stacks (for dependencies with ``yield``: none here) and an exception
layer that the app's ``ExceptionMiddleware`` provides anyway.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, get_type_hints

from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.types import Receive, Scope, Send

from gateway.api.json_body import validated
from gateway.errors import EngineUnavailableError
from gateway.state import GatewayState

PARAMETERS = {"body", "request", "pipeline", "caller"}


def current_state(request: Request) -> GatewayState:
    state = getattr(request.app.state, "gateway", None)
    if not isinstance(state, GatewayState):
        raise EngineUnavailableError("The gateway is still starting.")
    return state


class GenerationRoute(APIRoute):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        handle = self.get_route_handler()

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await handle(Request(scope, receive, send))
            await response(scope, receive, send)

        self.app = app

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint = self.endpoint
        names = set(inspect.signature(endpoint).parameters)
        if names != PARAMETERS:
            raise TypeError(f"{endpoint.__name__} must take exactly {sorted(PARAMETERS)}")
        model = get_type_hints(endpoint)["body"]
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"{endpoint.__name__}'s body must be a pydantic model")

        async def handle(request: Request) -> Response:
            state = current_state(request)
            caller = state.gatekeeper.authenticate(request.headers.get("authorization"))
            body = validated(model, await request.body())
            response: Response = await endpoint(
                body=body, request=request, pipeline=state.pipeline, caller=caller
            )
            return response

        return handle
