"""``TenantAdmin``: the admin API's tenants and keys, checked, stored, and served.

Every change is validated as the config file is (``TenantConfig``, then the tenant
inside a ``TenancyConfig`` with the file's prompt library), written to the
``TenantStore`` with its audit entry, and laid over the file's tenancy in the
gatekeeper's directory before the call returns (a revocation: refused at once, dropped
from the directory at the next refresh): a key revoked here gets 401 on this gateway
from the next request on. Other gateways on the same store see the store's
generation move within ``refresh_seconds`` (``follow``) and re-read it.

Errors: 400 naming the field, one identical 404 for an unknown tenant, an unknown key
id and another tenant's key id, 409 for a tenant the config file defines (read-only
over the API) or a name already taken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from gateway.errors import ConflictError, GatewayError, InvalidRequestError, NotFoundError
from gateway.settings.keys import generate_key, parse_key
from gateway.settings.tenancy import (
    NAME,
    RESERVED_TENANTS,
    BudgetPeriod,
    TenancyConfig,
    TenantConfig,
)
from gateway.tenancy.budget import Spend, window_of
from gateway.tenancy.gatekeeper import Gatekeeper
from gateway.tenancy.managed import KeyUses, ManagedKey, ManagedTenancy
from gateway.tenancy.tenant_store import (
    AuditEntry,
    Revocation,
    SqlTenantStore,
    TenantExistsError,
)

logger = logging.getLogger(__name__)

KEY_NOT_FOUND = "No such tenant, or no key with that id in it."


class KeyNotFoundError(NotFoundError):
    """The one 404 of the key routes: unknown tenant, unknown key, another tenant's key."""

    default_code = "key_not_found"

    def __init__(self) -> None:
        super().__init__(KEY_NOT_FOUND)


class TenantNotFoundError(NotFoundError):
    default_code = "tenant_not_found"

    def __init__(self, name: str) -> None:
        super().__init__(f"No tenant named {name!r}.")


def _invalid(exc: ValidationError) -> InvalidRequestError:
    """pydantic's first error as the API's 400, its location as ``param``."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first["loc"]) or None
    if first["type"] == "extra_forbidden":
        return InvalidRequestError(
            f"Unrecognized request argument supplied: {param}",
            param=param,
            code="unknown_parameter",
        )
    if first["type"] == "missing":
        return InvalidRequestError(
            f"Missing required parameter: '{param}'.",
            param=param,
            code="missing_required_parameter",
        )
    where = f"'{param}'" if param else "the tenant"
    return InvalidRequestError(
        f"Invalid value for {where}: {first['msg']}.", param=param, code="invalid_value"
    )


class TenantAdmin:
    """Built once at start-up. Concurrency rule: event-loop only; store calls run in
    worker threads, and the store serializes changes (across gateways too)."""

    def __init__(
        self,
        store: SqlTenantStore,
        gatekeeper: Gatekeeper,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.gatekeeper = gatekeeper
        self.uses = KeyUses()
        self._clock = clock
        self._generation = -1
        self._applying = asyncio.Lock()

    # -- serving --------------------------------------------------------------------

    def start(self) -> None:
        """Blocking: read the store once and serve its tenants and keys."""
        self._apply(self.store.snapshot())

    def _apply(self, snapshot: ManagedTenancy) -> None:
        if snapshot.generation >= self._generation:
            self._generation = snapshot.generation
            self.gatekeeper.apply_managed(snapshot, self.uses)

    async def refresh(self) -> bool:
        """Re-read the store if its generation moved; True when a new snapshot was
        applied. Every change of this gateway calls it before answering."""
        async with self._applying:
            current = await asyncio.to_thread(self.store.generation)
            if current == self._generation:
                return False
            # Revocations first, from a short indexed list: refused from here on, while
            # the rebuild below (linear in the number of keys: seconds at 100k) runs.
            revoked = await asyncio.to_thread(self.store.revoked_since, self._generation)
            self.uses.revoked.add(revoked)
            snapshot = await asyncio.to_thread(self.store.snapshot)
            # In a thread: requests go on with the current directory meanwhile.
            await asyncio.to_thread(self._apply, snapshot)
            self.uses.revoked.served_up_to(snapshot.generation)
            return True

    async def flush_uses(self) -> None:
        uses = self.uses.take()
        if not uses:
            return
        try:
            await asyncio.to_thread(self.store.touch_keys, uses)
        except BaseException:
            self.uses.put_back(uses)
            raise

    async def follow(self, interval: float) -> None:
        """Forever: pick up changes other gateways made, and write last-use times."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.refresh()
                await self.flush_uses()
            except GatewayError as exc:
                logger.warning("tenant store not read: %s", exc.message)
            except Exception:
                logger.exception("tenant store refresh failed")

    @property
    def directory_config(self) -> TenancyConfig:
        return self.gatekeeper.directory.config

    @property
    def file_config(self) -> TenancyConfig:
        return self.gatekeeper.directory.file_config

    # -- tenants --------------------------------------------------------------------

    def check_tenant(self, name: str, definition: dict[str, Any]) -> TenantConfig:
        """``definition`` as the config file would validate it under ``tenants.<name>``;
        a 400 naming the field if not."""
        if not NAME.match(name):
            raise InvalidRequestError(
                "Invalid value for 'name': must match [a-z0-9][a-z0-9._-]{0,63}.",
                param="name",
                code="invalid_value",
            )
        if name in RESERVED_TENANTS:
            raise InvalidRequestError(
                f"Invalid value for 'name': '{name}' is reserved.",
                param="name",
                code="invalid_value",
            )
        if "keys" in definition:
            raise InvalidRequestError(
                "Keys are not part of a tenant's definition: create them with "
                "POST /admin/tenants/{tenant}/keys.",
                param="keys",
                code="unknown_parameter",
            )
        try:
            tenant = TenantConfig.model_validate(definition)
        except ValidationError as exc:
            raise _invalid(exc) from None
        file = self.file_config
        policies = [("policy", tenant.policy)] + [
            (f"aliases.{alias}.policy", a.policy) for alias, a in tenant.aliases.items() if a.policy
        ]
        for where, policy in policies:
            for ref in policy.prompts or ():
                try:
                    file.prompt(ref)
                except ValueError as exc:
                    raise _field_error(f"{where}.prompts", str(exc)) from None
            for collection in policy.rag.collections if policy.rag else ():
                if collection not in tenant.collections and "*" not in tenant.collections:
                    raise _field_error(
                        f"{where}.rag.collections",
                        f"collection '{collection}' is not in the tenant's collections",
                    )
        try:  # whatever else the config file's schema checks across fields
            TenancyConfig(prompts=file.prompts, tenants={name: tenant})
        except ValidationError as exc:
            raise _invalid(exc) from None
        return tenant

    def _editable(self, name: str) -> None:
        if name in self.file_config.tenants:
            raise ConflictError(
                f"Tenant {name!r} is defined in the config file, which wins: edit it there.",
                code="tenant_in_config",
            )

    async def tenants(self) -> list[tuple[str, str, TenantConfig]]:
        """(name, source, definition) of every tenant served: ``config`` or ``api``."""
        await self.refresh()
        file = self.file_config.tenants
        return [
            (name, "config" if name in file else "api", tenant)
            for name, tenant in sorted(self.directory_config.tenants.items())
        ]

    async def tenant(self, name: str) -> tuple[str, TenantConfig]:
        await self.refresh()
        tenant = self.directory_config.tenants.get(name)
        if tenant is None:
            raise TenantNotFoundError(name)
        return ("config" if name in self.file_config.tenants else "api"), tenant

    async def create_tenant(self, name: str, definition: dict[str, Any], actor: str) -> None:
        await self.refresh()  # the file's tenants and the store's, as of now
        self.check_tenant(name, definition)
        self._editable(name)
        stored = _stored_definition(definition)
        try:
            await asyncio.to_thread(self.store.create_tenant, name, stored, actor)
        except TenantExistsError:
            raise ConflictError(f"Tenant {name!r} exists.", code="tenant_exists") from None
        await self.refresh()

    async def update_tenant(self, name: str, patch: dict[str, Any], actor: str) -> None:
        """Replace the fields ``patch`` names (as the config file reads them: null is
        null, e.g. ``max_in_flight: null`` is no cap), under the store's
        write lock: two edits at once apply one after the other, each on the other's
        result."""
        await self.refresh()
        self._editable(name)
        if "keys" in patch:
            self.check_tenant(name, patch)  # the same 400 as on creation

        def change(current: dict[str, Any]) -> dict[str, Any]:
            new = {**current, **patch}
            self.check_tenant(name, new)
            return _stored_definition(new)

        detail = {"fields": sorted(patch)}
        updated = await asyncio.to_thread(self.store.update_tenant, name, change, actor, detail)
        if updated is None:
            raise TenantNotFoundError(name)
        await self.refresh()

    async def delete_tenant(self, name: str, actor: str) -> list[str]:
        await self.refresh()
        self._editable(name)
        revoked = await asyncio.to_thread(self.store.delete_tenant, name, actor)
        if revoked is None:
            raise TenantNotFoundError(name)
        await self.refresh()
        return revoked

    # -- keys -----------------------------------------------------------------------

    async def _known_tenant(self, tenant: str) -> None:
        """404 unless ``tenant`` is served, as the store says now (a tenant another
        gateway made a moment ago counts)."""
        await self.refresh()
        if tenant not in self.directory_config.tenants:
            raise KeyNotFoundError()

    async def create_key(
        self,
        tenant: str,
        *,
        name: str,
        expires_at: int | None,
        budget: dict[str, Any] | None,
        models: list[str] | None,
        actor: str,
    ) -> tuple[ManagedKey, str]:
        """A new key of ``tenant``: the record and the secret key (shown once)."""
        await self._known_tenant(tenant)
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise _field_error("expires_at", "the expiry is in the past")
        new = generate_key()
        record = ManagedKey(
            id=new.key_id,
            tenant=tenant,
            name=name,
            hash=new.hash,
            created_at=int(now),
            expires_at=expires_at,
            budget=budget,
            models=tuple(models) if models is not None else None,
        )
        await asyncio.to_thread(self.store.create_key, record, actor)
        await self.refresh()
        return record, new.key

    async def list_keys(self, tenant: str) -> list[ManagedKey]:
        """The tenant's live keys made over the API, with last-use times not yet written."""
        await self._known_tenant(tenant)
        keys = await asyncio.to_thread(self.store.list_keys, tenant)
        out = []
        for key in keys:
            pending = self.uses.pending(key.id)
            if pending is not None and (key.last_used_at or 0.0) < pending:
                key = replace(key, last_used_at=pending)
            out.append(key)
        return out

    async def spent(self, tenant: str, keys: list[ManagedKey]) -> dict[str, tuple[str, Spend]]:
        """What each of ``tenant``'s ``keys`` used in its budget's current period (no
        budget: the current UTC month), and the period's name; every gateway's usage
        when the usage store is shared. One usage query per period, not per key."""
        now = self._clock()
        periods = {
            k.id: BudgetPeriod(k.budget["period"]) if k.budget else BudgetPeriod.MONTH for k in keys
        }
        out: dict[str, tuple[str, Spend]] = {}
        for period in set(periods.values()):
            window = window_of(period, now)
            rows = await asyncio.to_thread(
                self.gatekeeper.usage.query, tenant=tenant, since=window.start
            )
            totals: dict[str, Spend] = {}
            for row in rows:
                used = Spend(row.prompt_tokens + row.completion_tokens, row.cost)
                totals[row.key_id] = totals.get(row.key_id, Spend()) + used
            for key_id, key_period in periods.items():
                if key_period is period:
                    out[key_id] = (window.name, totals.get(key_id, Spend()))
        return out

    async def revoke_key(self, tenant: str, key_id: str, actor: str) -> Revocation:
        """Revoke now: the next request with the key, on this gateway, gets 401."""
        await self._known_tenant(tenant)
        outcome, generation = await asyncio.to_thread(self.store.revoke_key, tenant, key_id, actor)
        if outcome is Revocation.NOT_FOUND:
            raise KeyNotFoundError()
        # Refused from now on; the directory drops the key at the next refresh (within
        # refresh_seconds), so the answer does not wait for a rebuild.
        self.uses.revoked.add({key_id: generation})
        return outcome

    async def record(
        self, actor: str, action: str, target: str | None, detail: dict[str, Any]
    ) -> None:
        """Audit an admin change outside tenancy (adapters' traffic splits)."""
        await asyncio.to_thread(self.store.record, actor, action, target, detail)

    async def audit(self, *, limit: int, before: int | None) -> list[AuditEntry]:
        return await asyncio.to_thread(self.store.audit, limit=limit, before=before)

    async def close(self) -> None:
        try:
            await self.flush_uses()
        except Exception:
            logger.warning("last-use times of API keys not written at shutdown", exc_info=True)
        await asyncio.to_thread(self.store.close)


def _field_error(param: str, message: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"Invalid value for '{param}': {message}.", param=param, code="invalid_value"
    )


def _stored_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """What the store keeps: the fields as given (validated), defaults left implicit."""
    return TenantConfig.model_validate(definition).model_dump(mode="json", exclude_unset=True)


def actor_of(authorization: str | None) -> str:
    """Who made an admin call, for the audit log: ``key:<id>`` for a hashed admin key
    (``lg-<id>-...``), ``api_key`` for ``admin.api_key``. Called after the admin guard
    accepted the header, so either is a real admin credential."""
    token = (authorization or "")[7:].strip()
    parsed = parse_key(token)
    return f"key:{parsed[0]}" if parsed else "api_key"
