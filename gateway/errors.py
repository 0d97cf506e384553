"""Typed errors of the gateway. Each knows its HTTP status and OpenAI error ``type``.

One handler (``gateway.api.error_handlers``) renders every one of them as the body
OpenAI sends, ``{"error": {"message", "type", "param", "code"}}``; a failure during a
stream is sent as one such event followed by ``data: [DONE]``. The libraries' errors
are mapped onto this tree where they enter the gateway (``gateway.rag.errors``,
``gateway.adapter_runtime.errors``).

    GatewayError                      500 internal_error
    ├── InvalidRequestError           400 invalid_request_error
    │   ├── UnsupportedParameterError 400 invalid_request_error  (code: unsupported_parameter)
    │   └── ContextLengthError        400 invalid_request_error  (code: context_length_exceeded)
    ├── AuthenticationError           401 authentication_error
    ├── PermissionDeniedError         403 permission_error
    ├── NotFoundError                 404 invalid_request_error
    │   └── ModelNotFoundError        404 invalid_request_error  (code: model_not_found)
    ├── ConflictError                 409 invalid_request_error  (the state forbids it)
    ├── PayloadTooLargeError          413 invalid_request_error
    ├── RateLimitError                429 rate_limit_error
    ├── EngineUnavailableError        503 service_unavailable
    │   ├── OverloadedError           503 service_unavailable  (code: overloaded)
    │   └── ShuttingDownError         503 service_unavailable  (code: shutting_down)
    └── EngineFailureError            500 internal_error
"""

from __future__ import annotations

from typing import ClassVar


class GatewayError(Exception):
    """Base of every error the gateway reports to a client."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}


class InvalidRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class UnsupportedParameterError(InvalidRequestError):
    default_code = "unsupported_parameter"

    def __init__(self, param: str, detail: str | None = None) -> None:
        message = f"'{param}' is not supported by this server"
        super().__init__(f"{message}: {detail}" if detail else message, param=param)


class ContextLengthError(InvalidRequestError):
    default_code = "context_length_exceeded"


class AuthenticationError(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        # Byte-for-byte the same body whatever the model and whether it is unknown or
        # only invisible to this caller: nothing about other tenants can be learnt.
        super().__init__("The model does not exist or you do not have access to it.", param="model")
        self.model = model


class ConflictError(GatewayError):
    status_code = 409
    error_type = "invalid_request_error"
    default_code = "conflict"


class PayloadTooLargeError(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class RateLimitError(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"


class EngineUnavailableError(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "engine_unavailable"


class OverloadedError(EngineUnavailableError):
    """The engine is saturated and the queue in front of it is full (carries Retry-After)."""

    default_code = "overloaded"


class ShuttingDownError(EngineUnavailableError):
    """This gateway is draining before it stops: another instance should take the request."""

    default_code = "shutting_down"


class EngineFailureError(GatewayError):
    status_code = 500
    error_type = "internal_error"
    default_code = "engine_error"
