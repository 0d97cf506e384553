"""Logging: every line carries the request id; JSON lines on request.

What the gateway logs never contains API keys, prompts or policy text: code logs ids,
counts and timings only (``tests/test_tenancy_api.py`` captures logs and checks).

Libraries are another matter: at debug level fsspec logs every URL it fetches, with the
``user:password@`` and ``?token=`` of an adapter URI, and urllib3, httpx or botocore
log URLs and headers. So their loggers never go below WARNING, and every record the
handler writes goes through ``CredentialFilter`` first
(``tests/test_security_adapter_uris.py`` checks both).
"""

from __future__ import annotations

import json
import logging
import time
from typing import IO

from adapters.common.credential_redaction import redact_credentials
from gateway.request_context import request_id_var

QUIET_LIBRARIES = (
    "fsspec",
    "aiohttp",
    "urllib3",
    "requests",
    "httpx",
    "httpcore",
    "huggingface_hub",
    "botocore",
    "boto3",
    "s3transfer",
    "aiobotocore",
    "s3fs",
    "gcsfs",
    "google.auth",
    "adlfs",
    "azure",
)
"""Loggers of the storage and HTTP libraries adapters are fetched with: their debug and
info lines quote URLs and headers, credentials included."""


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class CredentialFilter(logging.Filter):
    """Masks credentials (URI user info, query values, auth headers, ``password=``...) in
    the message and traceback of every record, whichever logger made it.

    On a handler, it sees records from all loggers (a logger's own filters only see
    that logger's records); it rewrites the record itself, so handlers after it, and
    formatters that read ``exc_text``, get the masked text too.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message, formatted = record.getMessage(), True
        except Exception:  # noqa: BLE001 (an argument's __str__ may raise anything; a filter must not)
            message, formatted = f"{record.msg!s} (unformattable log arguments)", False
        masked = redact_credentials(message)
        if masked != message or not formatted:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_credentials(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_credentials(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exc_type"] = record.exc_info[0].__name__ if record.exc_info[0] else None
        return json.dumps(payload)


def configure_logging(
    level: str = "info", json_lines: bool = False, stream: IO[str] | None = None
) -> None:
    """One handler on the root logger (``stream``, default stderr) for everything."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(CredentialFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s [%(request_id)s] %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet = max(logging.WARNING, root.level)
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
