"""The adapter registry's errors as clients see them: mapped onto ``gateway.errors``.

They extend the tree of ``gateway.errors``::

    InvalidRequestError             400 (AdapterRequestError: name, source, archive)
    └── UnservableAdapterError      422 invalid_request_error (AdapterValidationError)
    NotFoundError                   404 (AdapterNotFoundError, code adapter_not_found)
    ConflictError                   409 invalid_request_error (AdapterConflictError)
    RegistryUnavailableError        503 service_unavailable (the shared registry store)
    AdapterSourceUnavailableError   503 service_unavailable (a tenant's adapter source)
    GatewayError                    500 (RegistryError: logged; the registry's state)

``as_gateway_error`` keeps each library error's message, ``code`` and ``param``, so one
renderer draws every failure of the gateway with the OpenAI body.
"""

from __future__ import annotations

import logging

from adapters import errors as lib
from adapters.registry_state_store import RegistryUnavailableError as StoreUnavailable
from gateway.errors import ConflictError, GatewayError, InvalidRequestError, NotFoundError

logger = logging.getLogger(__name__)


class UnservableAdapterError(InvalidRequestError):
    """The adapter's files were read but cannot be served (format, shapes, base, size)."""

    status_code = 422


class RegistryUnavailableError(GatewayError):
    """The shared registry (PostgreSQL) did not answer: a change cannot be made now."""

    status_code = 503
    error_type = "service_unavailable"
    default_code = "registry_unavailable"


class AdapterSourceUnavailableError(GatewayError):
    """A tenant's adapter source could not be read (store down, credentials missing):
    nothing is known about the name, so nothing is remembered; the client may retry."""

    status_code = 503
    error_type = "service_unavailable"
    default_code = "adapter_source_unavailable"


def as_gateway_error(exc: lib.AdapterError) -> GatewayError:
    kind: type[GatewayError] = GatewayError
    if isinstance(exc, lib.AdapterValidationError):
        kind = UnservableAdapterError
    elif isinstance(exc, lib.AdapterRequestError):
        kind = InvalidRequestError
    elif isinstance(exc, lib.AdapterNotFoundError):
        kind = NotFoundError
    elif isinstance(exc, lib.AdapterConflictError):
        kind = ConflictError
    elif isinstance(exc, StoreUnavailable):
        logger.warning("adapter registry unavailable: %s", exc.message)
        return RegistryUnavailableError(exc.message, code=exc.code, headers={"Retry-After": "1"})
    else:
        logger.error("adapter registry failure: %s: %s", type(exc).__name__, exc.message)
    return kind(exc.message, param=exc.param, code=exc.code)
