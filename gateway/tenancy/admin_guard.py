"""``AdminGuard``: who may call the admin API (and ``/metrics``), and how fast a client
may guess its key."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import SecretStr

from gateway.errors import AuthenticationError, PermissionDeniedError, RateLimitError
from gateway.tenancy.directory import Caller

logger = logging.getLogger(__name__)

BEARER = "bearer "

KeyLookup = Callable[[str], Caller | None]


def _nobody(_: str) -> Caller | None:
    return None


def _key_bytes(admin_key: SecretStr | None) -> bytes | None:
    return admin_key.get_secret_value().encode() if admin_key is not None else None


FREE_FAILURES = 5
"""Wrong admin keys a client may send in a window before it has to wait."""
WINDOW_SECONDS = 600.0
"""A client's failures are forgotten this long after its last one."""
FIRST_WAIT_SECONDS = 1.0
"""The wait after the first failure past the free ones; it doubles with each further one."""
MAX_WAIT_SECONDS = 300.0
MAX_CLIENTS = 10_000
"""Clients remembered at once (the oldest forgotten first): memory stays bounded."""


def client_group(address: str | None) -> str:
    """The unit failures are counted in: an IPv4 address, an IPv6 /64 (one host usually
    holds a whole /64, so counting single addresses would count nothing)."""
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


@dataclass
class _Failures:
    count: int = 0
    last: float = -math.inf
    until: float = -math.inf
    """It may try again from then on."""


class KeyGuessing:
    """Failures per client, with exponential back-off after ``FREE_FAILURES``.

    A client past its free failures waits ``FIRST_WAIT_SECONDS x 2^k`` (at most
    ``MAX_WAIT_SECONDS``) before its next try counts; a try during the wait is a 429
    without looking at the key (no oracle at any rate). Only the guessing client waits:
    the real admin calling from another address is not held back, and a success clears
    the client's count. Concurrency rule: event loop only (no awaits inside).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._clients: OrderedDict[str, _Failures] = OrderedDict()

    def wait(self, client: str) -> float:
        """Seconds ``client`` must still wait before a try counts (0: it may try)."""
        f = self._clients.get(client)
        if f is None:
            return 0.0
        now = self._clock()
        if now - f.last > WINDOW_SECONDS:
            del self._clients[client]
            return 0.0
        return max(0.0, f.until - now)

    def failed(self, client: str) -> int:
        now = self._clock()
        f = self._clients.pop(client, None)
        if f is None or now - f.last > WINDOW_SECONDS:
            f = _Failures()
        self._clients[client] = f  # (most recent last)
        while len(self._clients) > MAX_CLIENTS:
            self._clients.popitem(last=False)
        f.count += 1
        f.last = now
        past = f.count - FREE_FAILURES
        if past > 0:
            f.until = now + min(MAX_WAIT_SECONDS, FIRST_WAIT_SECONDS * 2 ** (past - 1))
        return f.count

    def succeeded(self, client: str) -> None:
        self._clients.pop(client, None)

    @property
    def tracked_clients(self) -> int:
        """How many clients' failures are remembered (at most ``MAX_CLIENTS``)."""
        return len(self._clients)


class AdminGuard:
    """Checks the ``Authorization: Bearer <key>`` header of an admin request.

    * the admin key of ``admin.api_key`` (constant-time comparison), or a key whose
      hash is in ``admin.keys`` (``lookup`` finds it): allowed;
    * a tenant's key: 403, tenants can never reach the admin API;
    * no header, any other key, or no admin key configured at all: 401.

    ``lookup`` reads the current tenant directory, so a config reload applies at once;
    the reload hands the new ``admin.api_key`` to ``rotate``. Concurrency: ``rotate``
    replaces one reference and ``check`` reads it once, so a request sees either the
    old key or the new one, never a mix, with no lock.

    A wrong key is logged with the client's address (never the key) and counted per
    client (``KeyGuessing``): past a few, the client gets 429 with ``Retry-After``.
    """

    def __init__(
        self,
        admin_key: SecretStr | None,
        is_tenant_key: Callable[[str], bool] | None = None,
        *,
        lookup: KeyLookup = _nobody,
        has_hashed_keys: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._key = _key_bytes(admin_key)
        self._is_tenant_key = is_tenant_key
        self._lookup = lookup
        self._has_hashed_keys = has_hashed_keys
        self.guessing = KeyGuessing(clock)

    def rotate(self, admin_key: SecretStr | None) -> None:
        """Accept ``admin_key`` from now on, and the previous one no longer."""
        self._key = _key_bytes(admin_key)

    def check(self, authorization: str | None, client: str | None = None) -> None:
        """Return if ``authorization`` holds an admin key; raise the refusal otherwise.
        ``client``: the caller's address (failures are counted per ``client_group``)."""
        expected = self._key
        if expected is None and not self._has_hashed_keys():
            raise AuthenticationError(
                "The admin API is disabled on this gateway: configure an admin key to enable it.",
                code="admin_api_disabled",
            )
        if not authorization or not authorization.lower().startswith(BEARER):
            raise AuthenticationError(
                "Missing admin key: send it as 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        group = client_group(client)
        wait = self.guessing.wait(group)
        if wait > 0:
            raise RateLimitError(
                "Too many wrong admin keys from this address. Retry later.",
                code="admin_key_attempts",
                headers={"Retry-After": str(math.ceil(wait))},
            )
        key = authorization[len(BEARER) :].strip()
        if expected is not None and hmac.compare_digest(key.encode(), expected):
            self.guessing.succeeded(group)
            return
        caller = self._lookup(key)
        if caller is not None and caller.is_admin and not caller.open_mode:
            self.guessing.succeeded(group)
            return
        if (caller is not None and caller.tenant is not None) or (
            self._is_tenant_key is not None and self._is_tenant_key(key)
        ):
            raise PermissionDeniedError("This key cannot use the admin API.")
        failures = self.guessing.failed(group)
        logger.warning(
            "wrong admin key from %s (%d in a row from %s)", client or "unknown", failures, group
        )
        raise AuthenticationError(
            "Incorrect admin key provided.", headers={"WWW-Authenticate": "Bearer"}
        )
