"""``BodySizeLimit``: refuse request bodies over a size with a 413 before parsing them."""

from __future__ import annotations

from collections.abc import Collection

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.error_handlers import render
from gateway.errors import PayloadTooLargeError


class BodySizeLimit:
    """Pure ASGI middleware.

    With a Content-Length (which the HTTP server holds the client to) the header is
    checked; a body without one (chunked) is read here up to the limit and replayed.
    ``exempt_paths`` are left to their route, which applies its own limit (uploads).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, exempt_paths: Collection[str] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt_paths = frozenset(exempt_paths)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLargeError(
            f"The request body is larger than the limit of {self.max_bytes} bytes."
        )
        await render(error)(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] in ("GET", "HEAD", "OPTIONS")
            or scope["path"] in self.exempt_paths
        ):
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None:
            if declared > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        body = await self._read_body(receive)
        if body is None:  # the client went away while sending
            return
        if len(body) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _read_body(self, receive: Receive) -> bytearray | None:
        """The body, read until its end or until it passes the limit (one chunk past it);
        None when the client disconnects first."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_bytes or not message.get("more_body", False):
                return body


def _content_length(scope: Scope) -> int | None:
    """The Content-Length header's value (the last one); None if absent or not a number."""
    declared = None
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                declared = None
    return declared
