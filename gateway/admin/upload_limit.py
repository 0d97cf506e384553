"""``BodySizeLimitWithUploads``: the app-wide body limit, minus upload routes with path
parameters (``/admin/collections/{name}/documents``), which apply their own limits."""

from __future__ import annotations

import re
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.body_limit import BodySizeLimit


class BodySizeLimitWithUploads(BodySizeLimit):
    """Pure ASGI middleware: ``BodySizeLimit``, except for paths that fully match
    ``exempt_pattern`` (their routes must limit what they read)."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        exempt_paths: Collection[str] = (),
        exempt_pattern: str | None = None,
    ) -> None:
        super().__init__(app, max_bytes, exempt_paths)
        self.exempt_pattern = re.compile(exempt_pattern) if exempt_pattern else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and self.exempt_pattern is not None
            and self.exempt_pattern.fullmatch(scope["path"])
        ):
            await self.app(scope, receive, send)
            return
        await super().__call__(scope, receive, send)
