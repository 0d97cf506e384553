"""Server-sent events framing, as OpenAI sends it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from pydantic import BaseModel

from gateway.errors import GatewayError
from gateway.protocol.common import ErrorInfo, ErrorResponse

logger = logging.getLogger(__name__)

DONE = "data: [DONE]\n\n"


def event(payload: BaseModel, *, exclude: set[str] | None = None) -> str:
    return f"data: {payload.model_dump_json(exclude=exclude)}\n\n"


def error_body(error: GatewayError) -> ErrorResponse:
    return ErrorResponse(
        error=ErrorInfo(
            message=error.message, type=error.error_type, param=error.param, code=error.code
        )
    )


async def with_error_events(events: AsyncIterator[str]) -> AsyncIterator[str]:
    """Pass events through; a failure after the stream began becomes an error event + DONE."""
    try:
        async for item in events:
            yield item
    except GatewayError as exc:
        yield event(error_body(exc))
        yield DONE
    except Exception:
        logger.exception("unhandled error while streaming")
        failure = GatewayError("The server failed while streaming this response.")
        yield event(error_body(failure))
        yield DONE
