"""``RequestObserver``: request ids, and one metrics record per request, whatever its fate."""

from __future__ import annotations

import random
import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.metrics import GatewayMetrics
from gateway.request_context import RequestLabels, labels_var, request_id_var

VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ENDPOINTS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completions",
    "/v1/retrieval/search": "retrieval",
    "/v1/embeddings": "embeddings",
    "/v1/models": "models",
}


def endpoint_of(path: str) -> str:
    if path in ENDPOINTS:
        return ENDPOINTS[path]
    if path.startswith("/v1/responses"):
        return "responses"
    if path.startswith("/v1/models/"):
        return "models"
    if path.startswith("/admin"):
        return "admin"
    return "other"


class RequestObserver:
    """Pure ASGI middleware (streams pass through untouched).

    Accepts a client's ``X-Request-ID`` (when it is a sane token) or makes one, returns
    it, and exposes it to every log line; records the request when its last byte is
    sent, with the labels the services filled in.
    """

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), b"")
        rid = given.decode("latin-1")
        if not VALID_REQUEST_ID.match(rid):
            # An id, not a secret: no system call per request for it (as uuid4 makes).
            rid = f"{random.getrandbits(128):032x}"
        path = scope.get("path", "")
        labels = RequestLabels(endpoint=endpoint_of(path))
        rid_token = request_id_var.set(rid)
        labels_token = labels_var.set(labels)
        started = time.monotonic()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", rid.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            if path not in ("/metrics", "/health", "/ready"):
                self.metrics.request_done(
                    tenant=labels.tenant,
                    model=labels.model,
                    adapter=labels.adapter,
                    endpoint=labels.endpoint,
                    status=status,
                    duration=time.monotonic() - started,
                )
            request_id_var.reset(rid_token)
            labels_var.reset(labels_token)
