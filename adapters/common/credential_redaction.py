"""Credentials out of text: URIs with ``user:password@`` or ``?token=``, auth headers.

Adapter URIs may carry credentials (``https://user:pw@host/a.zip?token=...``, presigned
S3 links). They must not reach a registry entry, an error body or a log line, whether
the text comes from this code or from a library (fsspec, aiohttp, urllib3, httpx)
that quotes the URL in a message. The gateway's log handler runs every record through
``redact_credentials``; sources use both functions for what they store and report.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#@'\"<>]+@")
"""``scheme://user:password@``: everything between ``//`` and ``@`` of the authority."""

_QUERY_VALUE = re.compile(r"(?P<name>[?&;][^\s=&#?'\"<>]+=)[^\s&#'\"<>]+")
"""The value of every query parameter: which ones are secret is not knowable in general
(``token``, ``sig``, ``X-Amz-Signature``, ``code``...), so all are masked."""

_AUTH_SCHEME = re.compile(r"(?i)\b(?P<scheme>bearer|basic|token)\s+[A-Za-z0-9._~+/=\-]{8,}")
"""``Authorization: Bearer <key>`` as it appears in a logged header dict."""

_SECRET_PAIR = re.compile(
    r"(?i)\b(?P<name>(?:x-amz-)?(?:signature|credential|security[_-]?token|session[_-]?token|"
    r"access[_-]?token|refresh[_-]?token|password|passwd|secret|client[_-]?secret|"
    r"api[_-]?key|access[_-]?key|secret[_-]?key|account[_-]?key|sas[_-]?token))"
    r"(?P<sep>['\"]?\s*[:=]\s*['\"]?)[^\s&,;'\"<>]+"
)
"""``name=value`` / ``'name': 'value'`` pairs whose name says they are a secret."""


def redact_uri(uri: str) -> str:
    """The URI without user info, query string or fragment (``scheme://host/path``)."""
    parts = urlsplit(uri)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def redact_credentials(text: str) -> str:
    """``text`` with credentials masked wherever they appear in it (URIs in messages,
    tracebacks, header dicts); the rest is left as it was, so logs stay useful."""
    if not text:
        return text
    text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    text = _QUERY_VALUE.sub(rf"\g<name>{MASK}", text)
    text = _AUTH_SCHEME.sub(rf"\g<scheme> {MASK}", text)
    return _SECRET_PAIR.sub(rf"\g<name>\g<sep>{MASK}", text)
