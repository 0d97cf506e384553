"""One renderer for every failure: the OpenAI error body, with the right status."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from adapters.errors import AdapterError
from gateway.adapter_runtime.errors import as_gateway_error as adapter_gateway_error
from gateway.errors import GatewayError, InvalidRequestError, NotFoundError
from gateway.pipeline.disconnect import ClientDisconnected
from gateway.protocol.sse import error_body
from gateway.rag.errors import as_gateway_error
from retrieval.errors import RetrievalError

logger = logging.getLogger(__name__)


def render(error: GatewayError) -> JSONResponse:
    return JSONResponse(
        error_body(error).model_dump(), status_code=error.status_code, headers=error.headers
    )


def _param(loc: tuple[object, ...]) -> str | None:
    parts = [p for p in loc if p != "body"]
    if not parts:
        return None
    out = str(parts[0])
    for p in parts[1:]:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def validation_error(exc: RequestValidationError) -> InvalidRequestError:
    errors = exc.errors()
    if not errors:
        return InvalidRequestError("The request body is not valid.")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return InvalidRequestError(
            "We could not parse the JSON body of your request.", code="invalid_json"
        )
    loc = tuple(first.get("loc", ()))
    param = _param(loc)
    if first.get("type") == "extra_forbidden":
        return InvalidRequestError(
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        )
    if first.get("type") == "missing":
        return InvalidRequestError(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    message = f"Invalid value for '{param}': {first.get('msg', 'invalid')}."
    return InvalidRequestError(message, param=param, code="invalid_value")


def install(app: FastAPI) -> None:
    @app.exception_handler(GatewayError)
    async def _gateway_error(_: Request, exc: GatewayError) -> JSONResponse:
        return render(exc)

    @app.exception_handler(AdapterError)
    async def _adapter_error(_: Request, exc: AdapterError) -> JSONResponse:
        # The registry's errors: mapped onto the gateway's tree, then rendered.
        return render(adapter_gateway_error(exc))

    @app.exception_handler(RetrievalError)
    async def _retrieval_error(_: Request, exc: RetrievalError) -> JSONResponse:
        # The library's errors (ingest rejections, unknown names): mapped, then rendered.
        return render(as_gateway_error(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return render(validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            err: GatewayError = NotFoundError(
                f"Unknown request URL: {request.method} {request.url.path}."
            )
        else:
            err = InvalidRequestError(str(exc.detail), code=f"http_{exc.status_code}")
            err.status_code = exc.status_code  # type: ignore[misc]
        return render(err)

    @app.exception_handler(ClientDisconnected)
    async def _disconnected(_: Request, __: ClientDisconnected) -> JSONResponse:
        # Nobody reads this; 499 is the conventional log status for it.
        return JSONResponse({}, status_code=499)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error", exc_info=exc)
        return render(GatewayError("The server had an error while processing your request."))
