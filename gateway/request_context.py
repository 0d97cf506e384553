"""Per-request context (request id, metric labels), carried by ``contextvars``.

Set by the ``RequestObserver`` middleware at the start of each request, filled in by
the services as they learn the tenant, model and adapter, and read by the log filter
and by the observer when the response ends.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass
class RequestLabels:
    tenant: str | None = None
    model: str | None = None
    adapter: str | None = None
    endpoint: str = "other"


request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
labels_var: contextvars.ContextVar[RequestLabels | None] = contextvars.ContextVar(
    "request_labels", default=None
)


def current_labels() -> RequestLabels:
    """The labels of the request being served (a throwaway object outside one)."""
    labels = labels_var.get()
    return labels if labels is not None else RequestLabels()
