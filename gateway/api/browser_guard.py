"""``BrowserGuard``: what a web page must not make a browser do to the gateway.

A page on any site can make its visitor's browser POST to ``http://127.0.0.1:8000``
without a CORS preflight, as long as the request is "simple": a ``text/plain``,
``application/x-www-form-urlencoded`` or ``multipart/form-data`` body and no
``Authorization`` header. The page cannot read the answer, unless it also rebinds its
own host name to 127.0.0.1 (DNS rebinding): then the browser thinks it is talking to
the page's own site and shows it everything. A gateway with keys is safe from both
(a key needs the ``Authorization`` header, which a page cannot send cross-site
without a preflight the gateway never grants); a gateway in open mode (no tenants, no
admin keys, loopback only) is not. So:

* JSON routes take ``Content-Type: application/json`` only, in every mode (415
  otherwise): a body a page can send without a preflight is refused before it is
  read. Upload routes also take ``multipart/form-data`` (they need a key anyway).
* In open mode, the ``Host`` header must name a loopback address (``localhost``,
  ``127.0.0.0/8``, ``[::1]``, any port), the address the server is bound to (the
  ASGI ``server``; an in-process test client's host name), or one of
  ``server.open_mode_hosts`` (a proxy's name for the gateway), unless
  ``server.allow_open_access`` (the operator serves open mode to a network on
  purpose); a rebound name is refused (403).
* In open mode, an ``Origin`` header must name the request's own ``Host`` (the same
  host and port): a page of another site is refused (403), also one on another port
  of localhost.

Requests without a body, and without ``Host``/``Origin`` (curl, SDKs, other servers),
are left alone. Pure ASGI middleware; ``open_mode`` is asked per request (keys can be
created at runtime, which ends open mode at once).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.error_handlers import render
from gateway.errors import GatewayError, PermissionDeniedError

JSON = "application/json"
MULTIPART = "multipart/form-data"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class UnsupportedMediaTypeError(GatewayError):
    status_code = 415
    error_type = "invalid_request_error"
    default_code = "unsupported_media_type"


def host_name(host: str) -> str:
    """``Host`` header value without its port, lower case (``[::1]`` keeps brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_loopback_name(name: str) -> bool:
    if name in ("localhost", "[::1]"):
        return True
    try:
        return ipaddress.ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


class BrowserGuard:
    def __init__(
        self,
        app: ASGIApp,
        open_mode: Callable[[], bool],
        open_mode_hosts: Collection[str] = (),
        any_host: bool = False,
        upload_paths: Collection[str] = (),
        upload_pattern: str | None = None,
    ) -> None:
        self.app = app
        self.open_mode = open_mode
        self.hosts = frozenset(host_name(h) for h in open_mode_hosts)
        self.any_host = any_host
        self.upload_paths = frozenset(upload_paths)
        self.upload_pattern = re.compile(upload_pattern) if upload_pattern else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            error = self._refusal(scope)
            if error is not None:
                await render(error)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> GatewayError | None:
        headers: dict[bytes, bytes] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name, value)
        if scope["method"] in BODY_METHODS and _has_body(headers):
            error = self._content_type_refusal(scope["path"], headers)
            if error is not None:
                return error
        if (b"host" in headers or b"origin" in headers) and self.open_mode():
            return self._origin_refusal(scope, headers)
        return None

    def _content_type_refusal(self, path: str, headers: dict[bytes, bytes]) -> GatewayError | None:
        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media == JSON:
            return None
        upload = path in self.upload_paths or (
            self.upload_pattern is not None and self.upload_pattern.fullmatch(path) is not None
        )
        if upload and media == MULTIPART:
            return None
        wanted = f"'{JSON}'" + (f" or '{MULTIPART}'" if upload else "")
        return UnsupportedMediaTypeError(
            f"Unsupported Content-Type: send the body as {wanted}.",
            param="Content-Type",
        )

    def _origin_refusal(self, scope: Scope, headers: dict[bytes, bytes]) -> GatewayError | None:
        host = headers.get(b"host", b"").decode("latin-1")
        if host and not self.any_host:
            name = host_name(host)
            server = scope.get("server") or (None, None)
            bound = str(server[0]).lower() if server[0] is not None else None
            if not is_loopback_name(name) and name not in self.hosts and name != bound:
                return PermissionDeniedError(
                    "This gateway has no API keys, so it only answers requests addressed "
                    "to a loopback name (localhost, 127.0.0.1, [::1]) or one of "
                    "server.open_mode_hosts.",
                    code="host_not_allowed",
                )
        origin = headers.get(b"origin")
        if origin is not None:
            # Same origin: the page's own host and port, whichever scheme a proxy ended.
            netloc = origin.decode("latin-1").strip().lower().partition("://")[2]
            if not host or netloc != host.strip().lower():
                return PermissionDeniedError(
                    "This gateway has no API keys, so it refuses requests from web pages "
                    "of other origins.",
                    code="cross_origin",
                )
        return None


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    if length is not None:
        return length.strip() not in (b"0", b"")
    return b"transfer-encoding" in headers
