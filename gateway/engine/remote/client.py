"""``ReplicaClient``: the HTTP calls the gateway makes to one vLLM OpenAI server.

It knows nothing of settings, placement or the gateway's errors; it raises its own:

    ReplicaError
    ├── ReplicaUnreachableError   connect failure, timeout, 5xx, broken stream: try elsewhere
    │   └── ReplicaProtocolError  an answer that breaks the protocol (malformed or oversized
    │                             events, bodies or lines; more tokens than asked for)
    └── ReplicaRejectedError      400/404/413/422 (answer or error event): the request is
                                  at fault (404: the replica does not know the model)

A replica is a trust boundary: every read from it is size-capped, and the text of its
errors goes into these exceptions (for the log, shortened by ``excerpt``), never to a
client as such.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
import urllib.request
from collections.abc import AsyncGenerator, Mapping
from contextlib import AsyncExitStack, aclosing
from dataclasses import dataclass
from typing import Any, cast

import httpx
import pydantic_core
from pydantic import SecretStr

from gateway.engine.remote.stream_http import (
    LineSplitter,
    LineTooLongError,
    StreamError,
    StreamPool,
    StreamResponse,
)

MAX_EVENT_BYTES = 16 << 20
"""The longest stream line read from a replica (its first event carries the prompt's
token ids: 16 MiB holds a two-million-token prompt's)."""

MAX_ANSWER_BYTES = 4 << 20
"""The largest non-streamed answer read (``/v1/models`` lists every adapter)."""

MAX_ERROR_BYTES = 64 << 10
"""Bytes of an error answer read; the rest is left unread."""

EXCERPT_CHARS = 300
"""Characters of a replica's own words kept in an exception (for the log)."""


def excerpt(text: str) -> str:
    """A replica's text made safe for one log line: control characters escaped, cut."""
    cut = text[:EXCERPT_CHARS]
    safe = cut.encode("unicode_escape").decode("ascii") if not cut.isprintable() else cut
    return safe if len(text) <= EXCERPT_CHARS else f"{safe}..."


class ReplicaError(Exception):
    """A call to a replica did not succeed."""


class ReplicaUnreachableError(ReplicaError):
    """No usable answer (network, deadline, server error): another replica may do.

    ``network``: the replica could not be reached at all (not merely slow or failing).
    """

    def __init__(self, message: str, *, network: bool = False) -> None:
        super().__init__(message)
        self.network = network


class ReplicaProtocolError(ReplicaUnreachableError):
    """The replica answered something the protocol does not allow: it is broken or hostile."""


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
    """One replica's base URL, key and connection pools. Use from one event loop.

    Every call has a deadline; closing a ``stream_completion`` iterator closes the
    HTTP response, which makes vLLM abort the request. Streams go through a
    ``StreamPool`` (the hot path); other calls, and streams when a ``transport`` is
    given or a proxy is configured in the environment, through httpx.
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
        direct = transport is None and not _proxied(base_url)
        self._streams = StreamPool(base_url, headers) if direct else None

    async def aclose(self) -> None:
        if self._streams is not None:
            self._streams.close()
        await self._http.aclose()

    async def stream_completion(
        self,
        body: dict[str, Any],
        *,
        max_event_bytes: int = MAX_EVENT_BYTES,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """POST /v1/completions (``stream: true``) and yield each event's JSON object.
        ``headers``: sent besides the client's own (a trace's ``traceparent``).

        The body is split into lines as bytes (no text decoding, one deadline per read,
        not per line; a line over ``max_event_bytes`` is a ``ReplicaProtocolError``).
        After ``[DONE]`` the rest of the response (the chunked body's end) is read, so
        the connection goes back to the pool instead of being closed: a new connection
        per request costs more than the request itself.
        """
        loop = asyncio.get_running_loop()
        d = self.deadlines
        started = loop.time()
        end = started + d.request
        limit = started + min(d.first_event, d.request)
        lines = LineSplitter(max_event_bytes)
        try:
            async with AsyncExitStack() as stack:
                async with asyncio.timeout_at(limit):
                    chunks = await self._open_stream(stack, body, headers)
                ended = False
                while not ended:
                    try:
                        async with asyncio.timeout_at(limit):
                            chunk = await anext(chunks)
                    except StopAsyncIteration:
                        ended, chunk = True, b"\n"  # a last line without its newline
                    for line in lines.feed(chunk):
                        if not line.startswith(b"data:"):
                            continue  # blank separators, comments, other SSE fields
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            await _drain(chunks, min(loop.time() + d.between_events, end))
                            return
                        event = _json_object(data)
                        if "error" in event:
                            raise _event_error(event["error"])
                        limit = min(loop.time() + d.between_events, end)
                        yield event
                raise ReplicaUnreachableError("the stream ended without [DONE]")
        except TimeoutError:
            raise ReplicaUnreachableError(
                f"{self.base_url}: no answer before the deadline"
            ) from None
        except httpx.HTTPError as exc:
            raise _transport_error(f"{self.base_url}", exc) from exc
        except LineTooLongError as exc:
            raise ReplicaProtocolError(f"{self.base_url}: {exc}") from None
        except StreamError as exc:
            raise ReplicaUnreachableError(f"{self.base_url}: {exc}", network=True) from exc

    async def _open_stream(
        self, stack: AsyncExitStack, body: dict[str, Any], headers: Mapping[str, str] | None
    ) -> AsyncGenerator[bytes, None]:
        """Send the request; its body's bytes as they come (after a 200, else raises).
        The response closes with ``stack``."""
        d = self.deadlines
        if self._streams is None:
            read = max(d.first_event, d.between_events)
            timeout = httpx.Timeout(read, connect=d.connect, write=d.admin, pool=d.connect)
            response = await stack.enter_async_context(
                self._http.stream(
                    "POST", "/v1/completions", json=body, headers=headers, timeout=timeout
                )
            )
            if response.status_code != 200:
                content = await _read_at_most(response, MAX_ERROR_BYTES)
                raise _status_error(response.status_code, content, str(response.url))
            chunks = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        else:
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            streamed = await self._streams.post(
                "/v1/completions", payload.encode(), connect_timeout=d.connect, headers=headers
            )
            stack.callback(streamed.close)
            if streamed.status != 200:
                url = f"{self.base_url}/v1/completions"
                content = await streamed.read_at_most(MAX_ERROR_BYTES)
                raise _status_error(streamed.status, content, url)
            chunks = _body_chunks(streamed)
        return await stack.enter_async_context(aclosing(chunks))

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
        """One request; its answer read up to ``MAX_ANSWER_BYTES`` (an error's up to
        ``MAX_ERROR_BYTES``): JSON when it says so, else text."""
        seconds = seconds or self.deadlines.admin
        where = f"{self.base_url}{path}"
        timeout = httpx.Timeout(seconds, connect=min(self.deadlines.connect, seconds))
        try:
            async with (
                asyncio.timeout(seconds),
                self._http.stream(method, path, json=body, timeout=timeout) as response,
            ):
                status = response.status_code
                json_answer = "json" in response.headers.get("content-type", "")
                cap = MAX_ANSWER_BYTES if status == 200 else MAX_ERROR_BYTES
                content = await _read_at_most(response, cap + 1)
        except TimeoutError:
            raise ReplicaUnreachableError(f"{where}: no answer in {seconds}s") from None
        except httpx.HTTPError as exc:
            raise _transport_error(where, exc) from exc
        if status != 200:
            raise _status_error(status, content[:MAX_ERROR_BYTES], where)
        if len(content) > MAX_ANSWER_BYTES:
            raise ReplicaProtocolError(f"{where}: an answer over {MAX_ANSWER_BYTES} bytes")
        if not json_answer or not content:
            return content.decode("utf-8", "replace")
        try:
            return pydantic_core.from_json(content)
        except ValueError:
            raise ReplicaProtocolError(f"{where}: unreadable JSON answer") from None


async def _read_at_most(response: httpx.Response, limit: int) -> bytes:
    """Up to ``limit`` bytes of a streamed httpx response's body (the rest unread)."""
    parts = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


def _transport_error(where: str, exc: httpx.HTTPError) -> ReplicaUnreachableError:
    slow = isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout | httpx.PoolTimeout)
    return ReplicaUnreachableError(f"{where}: {type(exc).__name__}", network=not slow)


async def _body_chunks(response: StreamResponse) -> AsyncGenerator[bytes, None]:
    while chunk := await response.read():
        yield chunk


def _proxied(url: str) -> bool:
    """Whether httpx would send requests to ``url`` through a proxy (from the
    environment: HTTP_PROXY, HTTPS_PROXY, ALL_PROXY, NO_PROXY)."""
    proxies = urllib.request.getproxies()
    scheme = url.split("://", 1)[0]
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    host = urllib.parse.urlsplit(url).hostname or ""
    return not urllib.request.proxy_bypass(host)


async def _drain(chunks: AsyncGenerator[bytes, None], deadline: float) -> None:
    """Read what follows ``[DONE]`` (nothing but the body's end, from vLLM) until the
    response ends, so its connection can be reused; give up quietly at ``deadline`` or
    after ``MAX_ERROR_BYTES`` (closing the response then closes the connection)."""
    left = MAX_ERROR_BYTES
    try:
        async with asyncio.timeout_at(deadline):
            async for chunk in chunks:
                left -= len(chunk)
                if left < 0:
                    return
    except (TimeoutError, httpx.HTTPError, StreamError):
        pass


def _json_object(data: bytes) -> dict[str, Any]:
    """One stream event (pydantic's Rust parser: half the time of ``json.loads`` on
    vLLM's small events, and every token of every stream comes through here)."""
    try:
        event = pydantic_core.from_json(data)
    except ValueError:
        raise ReplicaProtocolError("the replica sent an unreadable stream event") from None
    if not isinstance(event, dict):
        raise ReplicaProtocolError("the replica sent a stream event that is not an object")
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


def _status_error(status: int, content: bytes, url: str) -> ReplicaError:
    try:
        payload = pydantic_core.from_json(content)
    except ValueError:  # not JSON, or cut at MAX_ERROR_BYTES: the text itself
        payload = None
    text = content.decode("utf-8", "replace").strip()
    message, _ = _error_message(payload, text or f"HTTP {status}")
    if status in REQUEST_FAULTS:
        return ReplicaRejectedError(status, excerpt(message))
    return ReplicaUnreachableError(f"{url}: HTTP {status}: {excerpt(message)}")


def _event_error(error: Any) -> ReplicaError:
    """An error event: the request's fault for ``REQUEST_FAULTS``, else the replica's."""
    message, code = _error_message({"error": error}, "the replica reported an error")
    if code in REQUEST_FAULTS:
        return ReplicaRejectedError(code, excerpt(message))
    return ReplicaUnreachableError(f"the replica failed the request: {excerpt(message)}")
