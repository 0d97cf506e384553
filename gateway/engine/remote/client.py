"""``ReplicaClient``: the HTTP calls the gateway makes to one vLLM OpenAI server.

It knows nothing of settings, placement or the gateway's errors; it raises its own:

    ReplicaError
    ├── ReplicaUnreachableError   connect failure, timeout, 5xx, broken stream: try elsewhere
    └── ReplicaRejectedError      400/404/413/422 (answer or error event): the request is
                                  at fault (404: the replica does not know the model)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from typing import Any, cast

import httpx
from pydantic import SecretStr


class ReplicaError(Exception):
    """A call to a replica did not succeed."""


class ReplicaUnreachableError(ReplicaError):
    """No usable answer (network, deadline, server error): another replica may do.

    ``network``: the replica could not be reached at all (not merely slow or failing).
    """

    def __init__(self, message: str, *, network: bool = False) -> None:
        super().__init__(message)
        self.network = network


class ReplicaRejectedError(ReplicaError, ValueError):
    """The replica answered that the request is wrong (HTTP 4xx or an error event)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Deadlines:
    """Seconds. Streams: ``first_event`` from sending to the first event,
    ``between_events`` after that, ``request`` for the whole stream."""

    connect: float = 3.0
    first_event: float = 120.0
    between_events: float = 60.0
    request: float = 900.0
    admin: float = 60.0
    health: float = 5.0


class ReplicaClient:
    """One replica's base URL, key and connection pool. Use from one event loop.

    Every call has a deadline; closing a ``stream_completion`` iterator closes the
    HTTP response, which makes vLLM abort the request.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: SecretStr | None = None,
        deadlines: Deadlines | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.deadlines = deadlines or Deadlines()
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
        d = self.deadlines
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers=headers,
            timeout=httpx.Timeout(d.admin, connect=d.connect),
            # No pool cap: concurrency is the replica's to schedule, not the client's.
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def stream_completion(self, body: dict[str, Any]) -> AsyncGenerator[dict[str, Any], None]:
        """POST /v1/completions (``stream: true``) and yield each event's JSON object."""
        loop = asyncio.get_running_loop()
        d = self.deadlines
        started = loop.time()
        end = started + d.request
        limit = started + min(d.first_event, d.request)
        read = max(d.first_event, d.between_events)
        timeout = httpx.Timeout(read, connect=d.connect, write=d.admin, pool=d.connect)
        try:
            async with AsyncExitStack() as stack:
                async with asyncio.timeout_at(limit):
                    response = await stack.enter_async_context(
                        self._http.stream("POST", "/v1/completions", json=body, timeout=timeout)
                    )
                    if response.status_code != 200:
                        await response.aread()
                        raise _status_error(response)
                lines = await stack.enter_async_context(
                    aclosing(cast(AsyncGenerator[str, None], response.aiter_lines()))
                )
                while True:
                    try:
                        async with asyncio.timeout_at(limit):
                            line = await anext(lines)
                    except StopAsyncIteration:
                        raise ReplicaUnreachableError("the stream ended without [DONE]") from None
                    if not line.startswith("data:"):
                        continue  # blank separators, comments, other SSE fields
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    event = _json_object(data)
                    if "error" in event:
                        raise _event_error(event["error"])
                    limit = min(loop.time() + d.between_events, end)
                    yield event
        except TimeoutError:
            raise ReplicaUnreachableError(
                f"{self.base_url}: no answer before the deadline"
            ) from None
        except httpx.HTTPError as exc:
            raise _transport_error(f"{self.base_url}", exc) from exc

    async def health(self) -> None:
        """GET /health; raises unless it answers 200 within the health deadline."""
        await self._call("GET", "/health", seconds=self.deadlines.health)

    async def models(self, seconds: float | None = None) -> list[dict[str, Any]]:
        """GET /v1/models: the base model and every adapter loaded under a name."""
        payload = await self._call("GET", "/v1/models", seconds=seconds)
        data = payload.get("data") if isinstance(payload, dict) else None
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    async def load_adapter(self, name: str, path: str) -> None:
        """Register ``name`` for the adapter at ``path`` (vLLM also loads its weights)."""
        await self._call("POST", "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})

    async def unload_adapter(self, name: str) -> None:
        await self._call("POST", "/v1/unload_lora_adapter", {"lora_name": name})

    async def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        seconds: float | None = None,
    ) -> Any:
        seconds = seconds or self.deadlines.admin
        try:
            async with asyncio.timeout(seconds):
                response = await self._http.request(
                    method,
                    path,
                    json=body,
                    timeout=httpx.Timeout(seconds, connect=min(self.deadlines.connect, seconds)),
                )
        except TimeoutError:
            raise ReplicaUnreachableError(
                f"{self.base_url}{path}: no answer in {seconds}s"
            ) from None
        except httpx.HTTPError as exc:
            raise _transport_error(f"{self.base_url}{path}", exc) from exc
        if response.status_code != 200:
            raise _status_error(response)
        if "json" not in response.headers.get("content-type", ""):
            return response.text
        return response.json()


def _transport_error(where: str, exc: httpx.HTTPError) -> ReplicaUnreachableError:
    slow = isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout | httpx.PoolTimeout)
    return ReplicaUnreachableError(f"{where}: {type(exc).__name__}", network=not slow)


def _json_object(data: str) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError:
        raise ReplicaUnreachableError("the replica sent an unreadable stream event") from None
    if not isinstance(event, dict):
        raise ReplicaUnreachableError("the replica sent a stream event that is not an object")
    return event


def _error_message(payload: Any, fallback: str) -> tuple[str, int | None]:
    """vLLM's ``{"error": {"message", "code"}}`` (older: ``{"message", "code"}``)."""
    error = payload.get("error", payload) if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        return fallback, None
    message = error.get("message")
    code = error.get("code")
    return (
        message if isinstance(message, str) and message else fallback,
        code if isinstance(code, int) else None,
    )


REQUEST_FAULTS = frozenset({400, 404, 413, 422})
"""Statuses that blame the request. Others (401/403: a wrong key, 408, 429, 5xx) blame
the replica, so another one may serve the request."""


def _status_error(response: httpx.Response) -> ReplicaError:
    try:
        payload = response.json()
    except ValueError:
        payload = None
    message, _ = _error_message(payload, f"HTTP {response.status_code}")
    if response.status_code in REQUEST_FAULTS:
        return ReplicaRejectedError(response.status_code, message)
    return ReplicaUnreachableError(f"{response.request.url}: HTTP {response.status_code}")


def _event_error(error: Any) -> ReplicaError:
    """An error event: the request's fault for ``REQUEST_FAULTS``, else the replica's."""
    message, code = _error_message({"error": error}, "the replica reported an error")
    if code in REQUEST_FAULTS:
        return ReplicaRejectedError(code, message)
    return ReplicaUnreachableError(f"the replica failed the request: {message}")
