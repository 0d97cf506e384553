"""``AdminGuard``: who may call the admin API (and ``/metrics``)."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from pydantic import SecretStr

from gateway.errors import AuthenticationError, PermissionDeniedError
from gateway.tenancy.directory import Caller

BEARER = "bearer "

KeyLookup = Callable[[str], Caller | None]


def _nobody(_: str) -> Caller | None:
    return None


def _key_bytes(admin_key: SecretStr | None) -> bytes | None:
    return admin_key.get_secret_value().encode() if admin_key is not None else None


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
    """

    def __init__(
        self,
        admin_key: SecretStr | None,
        is_tenant_key: Callable[[str], bool] | None = None,
        *,
        lookup: KeyLookup = _nobody,
        has_hashed_keys: Callable[[], bool] = lambda: False,
    ) -> None:
        self._key = _key_bytes(admin_key)
        self._is_tenant_key = is_tenant_key
        self._lookup = lookup
        self._has_hashed_keys = has_hashed_keys

    def rotate(self, admin_key: SecretStr | None) -> None:
        """Accept ``admin_key`` from now on, and the previous one no longer."""
        self._key = _key_bytes(admin_key)

    def check(self, authorization: str | None) -> None:
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
        key = authorization[len(BEARER) :].strip()
        if expected is not None and hmac.compare_digest(key.encode(), expected):
            return
        caller = self._lookup(key)
        if caller is not None and caller.is_admin and not caller.open_mode:
            return
        if (caller is not None and caller.tenant is not None) or (
            self._is_tenant_key is not None and self._is_tenant_key(key)
        ):
            raise PermissionDeniedError("This key cannot use the admin API.")
        raise AuthenticationError(
            "Incorrect admin key provided.", headers={"WWW-Authenticate": "Bearer"}
        )
