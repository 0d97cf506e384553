"""``TenantDirectory``: key -> tenant, and what that tenant may call and under which policy.

Built once per config version and never mutated; a reload builds a new one and swaps
the reference, so a request keeps the directory it was admitted under. The tenants and
keys made over the admin API (``managed``) are laid over the config file's
(``gateway.tenancy.managed.merge``: the file wins); their keys may carry an expiry and a
subset of the tenant's models.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from adapters.namespace_sources import AdapterSourceSpec
from adapters.traffic_split import bucket, choose
from gateway.errors import (
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
)
from gateway.model_catalog import ServedModel
from gateway.settings.keys import parse_key, verify_secret
from gateway.settings.tenancy import (
    AliasConfig,
    KeyConfig,
    PolicyConfig,
    TenancyConfig,
    TenantConfig,
)
from gateway.tenancy.managed import EMPTY, KeyRule, KeyUses, ManagedTenancy, merge
from gateway.tenancy.policy import Policy
from gateway.tenancy.rate_limit import Limit

OPEN_TENANT = "default"

SourcedResolve = Callable[[str, str, AdapterSourceSpec], ServedModel]
"""(tenant, model, its source) -> the model in that tenant's adapter namespace."""


@dataclass(frozen=True)
class Caller:
    """Who sent a request. ``tenant`` is None for an admin key.

    ``directory`` is the config version the caller was authenticated under: every later
    step of the request (routing, limits, collections) reads that one, so a reload in
    the middle of a request can neither mix two versions nor lose the caller's key.
    """

    tenant: str | None
    key_id: str | None
    is_admin: bool = False
    open_mode: bool = False
    directory: TenantDirectory | None = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        return self.tenant or ("admin" if self.is_admin else OPEN_TENANT)


@dataclass(frozen=True)
class Route:
    """A ``model`` as resolved for one caller."""

    served: ServedModel
    reported_id: str
    """What the response's ``model`` says: the name the client used (alias included)."""
    policy: Policy
    cache_salt: str | None


class TenantDirectory:
    def __init__(
        self,
        tenancy: TenancyConfig,
        managed: ManagedTenancy = EMPTY,
        uses: KeyUses | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.file_config = tenancy
        """The config file's part alone (what a reload replaces)."""
        self.managed = managed
        tenancy, self._rules = merge(tenancy, managed)
        self.config = tenancy
        """The tenancy served: the file's, with the admin API's tenants and keys."""
        self.uses = uses
        self.clock = clock
        self._keys: dict[str, tuple[str | None, KeyConfig]] = {}
        for key in tenancy.admin.keys:
            self._keys[key.id] = (None, key)
        for name, tenant in tenancy.tenants.items():
            for key in tenant.keys:
                self._keys[key.id] = (name, key)
        self._salts = {name: _cache_salt(name) for name in tenancy.tenants}
        self._limits = {
            key.id: _limits_of(name, key, tenant)
            for name, tenant in tenancy.tenants.items()
            for key in tenant.keys
        }
        self._no_policy = Policy(_EMPTY_POLICY, tenancy)
        self._policies: dict[tuple[str, str | None], Policy] = {}
        for name, tenant in tenancy.tenants.items():
            self._policies[(name, None)] = Policy(tenant.policy, tenancy)
            for alias, cfg in tenant.aliases.items():
                merged = cfg.policy.over(tenant.policy) if cfg.policy else tenant.policy
                self._policies[(name, alias)] = Policy(merged, tenancy)

    @property
    def open_mode(self) -> bool:
        return not (self.config.enabled or self.managed.has_records)

    def authenticate(self, authorization: str | None) -> Caller:
        if self.open_mode:
            return Caller(tenant=None, key_id=None, is_admin=True, open_mode=True, directory=self)
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthenticationError(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                code="missing_api_key",
            )
        parsed = parse_key(authorization[7:].strip())
        record = self._keys.get(parsed[0]) if parsed else None
        # Verify against a dummy hash when the id is unknown, so timing says nothing.
        stored = record[1].hash if record else _DUMMY_HASH
        if not verify_secret(parsed[1] if parsed else "", stored) or record is None:
            raise AuthenticationError("Incorrect API key provided.")
        tenant, key = record
        rule = self._rules.get(key.id)
        if rule is not None:
            if self.uses is not None and key.id in self.uses.revoked:
                raise AuthenticationError("Incorrect API key provided.")
            now = self.clock()
            if rule.expires_at is not None and now >= rule.expires_at:
                raise AuthenticationError("This API key has expired.", code="expired_api_key")
            if self.uses is not None:
                self.uses.record(key.id, now)
        return Caller(tenant=tenant, key_id=key.id, is_admin=tenant is None, directory=self)

    def key(self, key_id: str) -> KeyConfig | None:
        """A key's config by id, the config file's or the admin API's (a dict lookup)."""
        record = self._keys.get(key_id)
        return record[1] if record is not None else None

    def tenant(self, caller: Caller) -> TenantConfig | None:
        return self.config.tenants.get(caller.tenant) if caller.tenant else None

    def route(
        self,
        caller: Caller,
        model: str | None,
        resolve: Callable[[str], ServedModel],
        sourced: SourcedResolve | None = None,
        sticky: str | None = None,
    ) -> Route:
        """Resolve ``model`` for ``caller``. Unknown and forbidden give the same 404.

        A tenant with an ``adapter_source`` reaches, through ``sourced``, the adapters of
        its own namespace: any name its aliases, models and the registry do not answer
        (``FetchNeeded`` when the source has to be asked first). An alias with a
        ``split`` sends ``sticky`` (the caller's sticky key) to one of its adapters, by
        the same buckets as a version split (without one: the alias's ``model``).
        """
        tenant = self.tenant(caller)
        if tenant is None:
            if caller.is_admin or caller.open_mode:
                if not model:
                    raise _missing_model()
                return Route(resolve(model), model, self._no_policy, None)
            raise ModelNotFoundError(model or "")
        assert caller.tenant is not None
        name = model or tenant.default_model
        if not name:
            raise _missing_model()
        if not self._key_allows(caller, name):
            raise ModelNotFoundError(name)
        salt = self._salts[caller.tenant]
        alias = tenant.aliases.get(name)
        if alias is not None:
            served = _alias_target(alias, f"{caller.tenant}/{name}", resolve, sticky)
            return Route(served, name, self._policies[(caller.tenant, name)], salt)
        policy = self._policies[(caller.tenant, None)]
        source = tenant.adapter_source
        if self._allowed(tenant, name):
            try:
                return Route(resolve(name), name, policy, salt)
            except ModelNotFoundError:
                if source is None or sourced is None:
                    raise
        if source is None or sourced is None:
            raise ModelNotFoundError(name)
        return Route(sourced(caller.tenant, name, source), name, policy, salt)

    def _key_allows(self, caller: Caller, model: str) -> bool:
        """A managed key with a model list may call only those (names as the tenant
        calls them: base, adapter, name@version or alias)."""
        rule: KeyRule | None = self._rules.get(caller.key_id or "")
        if rule is None or rule.models is None:
            return True
        return model in rule.models or model.partition("@")[0] in rule.models

    @staticmethod
    def _allowed(tenant: TenantConfig, model: str) -> bool:
        base_name = model.partition("@")[0]
        return "*" in tenant.models or model in tenant.models or base_name in tenant.models

    def visible(self, caller: Caller, model_ids: list[str]) -> list[tuple[str, str | None]]:
        """(id, alias target) pairs the caller may see, from the served ``model_ids``."""
        tenant = self.tenant(caller)
        if tenant is None:
            return [(m, None) for m in model_ids] if caller.is_admin or caller.open_mode else []
        out: list[tuple[str, str | None]] = [
            (m, None) for m in model_ids if self._allowed(tenant, m)
        ]
        out += [(alias, cfg.model) for alias, cfg in tenant.aliases.items()]
        return [(m, target) for m, target in out if self._key_allows(caller, m)]

    def limits(self, caller: Caller) -> dict[str, Limit]:
        """Rate-limit subjects for this caller: its key and its tenant (none for admin)."""
        return self._limits.get(caller.key_id, {}) if caller.key_id is not None else {}

    def searchable(self, caller: Caller, collections: list[str]) -> bool:
        """Whether ``caller`` may search every one of ``collections``."""
        tenant = self.tenant(caller)
        if tenant is None:
            return caller.is_admin or caller.open_mode
        return "*" in tenant.collections or all(n in tenant.collections for n in collections)


def _alias_target(
    alias: AliasConfig, key: str, resolve: Callable[[str], ServedModel], sticky: str | None
) -> ServedModel:
    """The alias's ``model``, or with a ``split`` and a sticky key the adapter the
    caller's bucket of ``key`` (tenant/alias) chose. A chosen adapter that does not
    resolve (retired, not registered) gives way to the alias's ``model``, as a version
    split's retired version gives way to the active one: a share of the alias's callers
    never gets a 404 that the others do not."""
    if alias.split is not None and sticky is not None:
        chosen = choose(list(alias.split.items()), bucket(key, sticky))
        if chosen != alias.model:
            try:
                return resolve(chosen)
            except ModelNotFoundError:
                pass
    return resolve(alias.model)


def _limits_of(tenant_name: str, key: KeyConfig, tenant: TenantConfig) -> dict[str, Limit]:
    limits: dict[str, Limit] = {}
    if key.rate_limit:
        limits[f"key:{key.id}"] = Limit(**key.rate_limit.model_dump())
    if tenant.rate_limit:
        limits[f"tenant:{tenant_name}"] = Limit(**tenant.rate_limit.model_dump())
    return limits


def _missing_model() -> InvalidRequestError:
    return InvalidRequestError(
        "Missing required parameter: 'model'.", param="model", code="missing_required_parameter"
    )


def _cache_salt(tenant: str) -> str:
    return hashlib.sha256(f"loragate-tenant:{tenant}".encode()).hexdigest()[:32]


_DUMMY_HASH = "sha256$" + "0" * 32 + "$" + "0" * 64

_EMPTY_POLICY = PolicyConfig()
