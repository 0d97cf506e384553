"""HTTP(S) adapter sources reach public hosts only.

Whoever calls the admin API chooses an ``https://`` URI. Unchecked, it reaches this
machine's own services (``127.0.0.1``), the cloud metadata service (``169.254.169.254``)
and the private network, and the difference between "connection refused" and "not an
adapter" turns registration into a port scanner. So, for ``http`` and ``https``:

* before anything is fetched, the URI's host is resolved and every address must be
  public (``check_public_host``): a clear 400, and no connection is made;
* every connection of the aiohttp session fsspec uses goes through
  ``PublicOnlyResolver``, which refuses internal addresses when it resolves them for
  the connection itself (no DNS-rebinding window), and a trace hook refuses internal
  IP-literal hosts (aiohttp connects to those without a resolver) on the first request
  and on every redirect, so a public server cannot bounce the download inwards.

Other protocols (``s3``, ``gs``, ``hf``...) talk to their service's fixed endpoints.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from adapters.errors import InvalidSourceUriError, SourceNotAllowedError, SourceUnavailableError

DEFAULT_PORTS = {"http": 80, "https": 443}


class InternalHostRefused(OSError):
    """Raised inside the HTTP client for a connection to an internal address."""


def is_public_address(address: str) -> bool:
    """True for a globally routable unicast address only.

    False for loopback, private, link-local, shared (CGNAT), multicast, reserved,
    unspecified and documentation addresses, for anything that is not an address, and
    for IPv6 forms that embed such an IPv4 address (6to4; mapped ones are not global).
    """
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    embedded = ip.sixtofour if isinstance(ip, ipaddress.IPv6Address) else None
    if embedded is not None and not is_public_address(str(embedded)):
        return False
    return ip.is_global and not ip.is_multicast


def looks_like_ip(host: str) -> bool:
    """aiohttp's own test: such hosts are connected to directly, never resolved."""
    return ":" in host or host.replace(".", "").isdigit()


def refusal(host: str) -> SourceNotAllowedError:
    return SourceNotAllowedError(
        f"The adapter URI's host {host!r} is not a public address: loopback, private, "
        "link-local and reserved addresses are refused (registry.allow_internal_hosts "
        "allows them).",
        code="source_host_not_public",
    )


def check_public_host(host: str | None, port: int | None, scheme: str) -> None:
    """Resolve ``host`` and refuse it unless every address is public. Blocking (DNS)."""
    if not host:
        raise InvalidSourceUriError("The adapter URI names no host.")
    try:
        infos = socket.getaddrinfo(
            host, port or DEFAULT_PORTS.get(scheme, 443), type=socket.SOCK_STREAM
        )
    except (OSError, UnicodeError):
        raise SourceUnavailableError(
            f"The adapter URI's host {host!r} cannot be resolved."
        ) from None
    addresses = {str(info[4][0]) for info in infos}
    if not addresses or not all(is_public_address(a) for a in addresses):
        raise refusal(host)


class HostGuard:
    """The connection-time checks of one download, and the refusals they made.

    fsspec runs the download on its own event-loop thread and reports most failures
    as "not found"; ``raise_if_refused`` turns them back into the refusal they were.
    """

    def __init__(self) -> None:
        self.refused: list[str] = []

    def storage_options(self) -> dict[str, Any]:
        """fsspec HTTP options that route every request through this guard."""
        return {"get_client": self._client, "skip_instance_cache": True}

    def raise_if_refused(self) -> None:
        if self.refused:
            raise refusal(self.refused[0])

    def refuse(self, host: str) -> InternalHostRefused:
        self.refused.append(host)
        return InternalHostRefused(f"{host} is not a public address")

    def check_literal(self, url: URL) -> None:
        """Refuse an internal IP-literal host (names are checked when resolved)."""
        host = url.raw_host or ""
        if looks_like_ip(host) and not is_public_address(host):
            raise self.refuse(host)

    async def _client(self, **kwargs: Any) -> aiohttp.ClientSession:
        trace = aiohttp.TraceConfig()
        trace.on_request_start.append(self._on_start)
        trace.on_request_redirect.append(self._on_redirect)
        connector = aiohttp.TCPConnector(resolver=PublicOnlyResolver(self))
        options = {**kwargs, "connector": connector, "trace_configs": [trace]}
        return aiohttp.ClientSession(**{**options, "trust_env": False})

    async def _on_start(
        self, _: aiohttp.ClientSession, __: Any, params: aiohttp.TraceRequestStartParams
    ) -> None:
        self.check_literal(params.url)

    async def _on_redirect(
        self, _: aiohttp.ClientSession, __: Any, params: aiohttp.TraceRequestRedirectParams
    ) -> None:
        location = params.response.headers.get("Location")
        if location:
            self.check_literal(params.url.join(URL(location)))


class PublicOnlyResolver(AbstractResolver):
    """aiohttp resolver that refuses a name with any internal address."""

    def __init__(self, guard: HostGuard) -> None:
        self._guard = guard
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if not results or not all(is_public_address(r["host"]) for r in results):
            raise self._guard.refuse(host)
        return results

    async def close(self) -> None:
        await self._inner.close()
