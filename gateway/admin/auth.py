"""``AdminGuard``: who may call the admin API."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from pydantic import SecretStr

from gateway.errors import AuthenticationError, PermissionDeniedError

BEARER = "bearer "


def _no_tenants(_: str) -> bool:
    return False


class AdminGuard:
    """Checks the ``Authorization: Bearer <key>`` header of an admin request.

    * no header, or no admin key configured: 401;
    * the admin key (compared in constant time): allowed;
    * a key that authenticates a tenant (``is_tenant_key``; the tenant layer will
      provide it): 403, tenants can never reach the admin API;
    * any other key: 401.
    """

    def __init__(
        self, admin_key: SecretStr | None, is_tenant_key: Callable[[str], bool] = _no_tenants
    ) -> None:
        self._key = admin_key.get_secret_value().encode() if admin_key is not None else None
        self._is_tenant_key = is_tenant_key

    def check(self, authorization: str | None) -> None:
        if self._key is None:
            raise AuthenticationError(
                "The admin API is disabled on this gateway: set admin.api_key to enable it.",
                code="admin_api_disabled",
            )
        if not authorization or not authorization.lower().startswith(BEARER):
            raise AuthenticationError(
                "Missing admin key: send it as 'Authorization: Bearer <key>'.",
                headers={"WWW-Authenticate": "Bearer"},
            )
        key = authorization[len(BEARER) :].strip()
        if hmac.compare_digest(key.encode(), self._key):
            return
        if self._is_tenant_key(key):
            raise PermissionDeniedError("This key cannot use the admin API.")
        raise AuthenticationError(
            "Incorrect admin key provided.", headers={"WWW-Authenticate": "Bearer"}
        )
