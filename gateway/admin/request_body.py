"""Admin request bodies read by hand: routes exempt from the app-wide body limit (uploads
and ingestion) read their JSON here, under a limit of their own
(``gateway.api.json_body.validated`` validates it)."""

from __future__ import annotations

from fastapi import Request

from gateway.errors import InvalidRequestError, PayloadTooLargeError


def declared_length(request: Request, limit: int) -> int | None:
    """The Content-Length the client declared (None: none); 413 above ``limit``."""
    value = request.headers.get("content-length")
    if value is None:
        return None
    try:
        declared = int(value)
    except ValueError:
        raise InvalidRequestError("Invalid Content-Length header.") from None
    if declared > limit:
        raise PayloadTooLargeError(f"The request body is larger than the limit of {limit} bytes.")
    return declared


async def read_json_body(request: Request, limit: int) -> bytes:
    """The raw body, read as it streams in, refused (413) once past ``limit``."""
    declared_length(request, limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLargeError(
                f"The request body is larger than the limit of {limit} bytes."
            )
    return bytes(body)
