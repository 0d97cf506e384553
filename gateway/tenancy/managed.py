"""Tenants and keys made over the admin API, and how they join the config file's.

The admin API's records live in a ``TenantStore`` (``gateway.tenancy.tenant_store``);
a ``ManagedTenancy`` is one snapshot of them. ``merge`` lays it over the config file's
tenancy to give the one ``TenancyConfig`` a ``TenantDirectory`` serves:

- **The config file wins.** A tenant the file names is read-only over the API (its
  definition is the file's; the API refuses to edit or delete it), and an API tenant
  whose name the file starts using later is shadowed by the file's, with a warning.
- Keys made over the API may belong to a file tenant or an API tenant; a key whose
  tenant no longer exists serves nothing.
- Once the store holds any tenant or key (revoked ones included), keys are required:
  deleting the last API tenant never turns the gateway into an open one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from gateway.settings.tenancy import BudgetConfig, KeyConfig, TenancyConfig, TenantConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ManagedKey:
    """A key made over the admin API. ``hash`` is ``sha256$salt$digest``; the key
    itself is never stored."""

    id: str
    tenant: str
    name: str
    hash: str
    created_at: int
    expires_at: int | None = None
    budget: dict[str, Any] | None = None
    models: tuple[str, ...] | None = None
    revoked_at: float | None = None
    last_used_at: float | None = None

    def key_config(self) -> KeyConfig:
        """As the config file's keys are read. Built without validating the id and hash
        again (the store holds only what ``generate_key`` made): a snapshot of many keys
        is rebuilt on every admin change."""
        budget = BudgetConfig.model_validate(self.budget) if self.budget is not None else None
        return KeyConfig.model_construct(id=self.id, hash=self.hash, rate_limit=None, budget=budget)


@dataclass(frozen=True)
class ManagedTenant:
    """A tenant defined over the admin API: its definition as the config file would
    hold it (a ``TenantConfig`` without keys), and a version bumped by every edit."""

    name: str
    definition: dict[str, Any]
    version: int
    updated_at: float

    def config(self) -> TenantConfig:
        return TenantConfig.model_validate(self.definition)


@dataclass(frozen=True)
class KeyRule:
    """What a managed key adds to its tenant's rules: an expiry and a model subset."""

    expires_at: int | None
    models: frozenset[str] | None


@dataclass(frozen=True)
class ManagedTenancy:
    """One snapshot of the store: live (unrevoked) keys, API tenants, and the store's
    generation (bumped by every change, so a gateway re-reads only when it moved)."""

    generation: int
    tenants: Mapping[str, ManagedTenant] = field(default_factory=dict)
    keys: tuple[ManagedKey, ...] = ()
    has_records: bool = False
    """The store holds a tenant or a key (revoked ones count): keys stay required."""


EMPTY = ManagedTenancy(generation=0)


def merge(file: TenancyConfig, managed: ManagedTenancy) -> tuple[TenancyConfig, dict[str, KeyRule]]:
    """The file's tenancy with ``managed``'s tenants and keys added, and each managed
    key's rule. Never raises: a record that no longer validates against the file (a
    prompt the file dropped) is left out and logged."""
    if not managed.tenants and not managed.keys:
        return file, {}
    tenants: dict[str, TenantConfig] = dict(file.tenants)
    for name, record in managed.tenants.items():
        if name in file.tenants:
            logger.warning("tenant %s: the config file's definition wins over the API's", name)
            continue
        try:
            candidate = record.config()
            TenancyConfig(prompts=file.prompts, tenants={name: candidate})
        except (ValidationError, ValueError) as exc:
            logger.error("tenant %s from the admin API left out: %s", name, exc)
            continue
        tenants[name] = candidate
    taken = {k.id for k in file.admin.keys} | {k.id for t in file.tenants.values() for k in t.keys}
    added: dict[str, list[KeyConfig]] = {}
    rules: dict[str, KeyRule] = {}
    for key in managed.keys:
        if key.tenant not in tenants or key.id in taken:
            continue
        added.setdefault(key.tenant, []).append(key.key_config())
        models = frozenset(key.models) if key.models is not None else None
        rules[key.id] = KeyRule(key.expires_at, models)
    for name, keys in added.items():
        tenant = tenants[name]
        tenants[name] = tenant.model_copy(update={"keys": [*tenant.keys, *keys]})
    merged = file.model_copy(update={"tenants": tenants})
    return merged, rules


class KeyUses:
    """What happens to managed keys between two snapshots of the store: when each was
    last used (a dict write per request, written to the store in one batch every few
    seconds by ``TenantAdmin.flush_uses``, never a database write on the request path),
    and which were revoked on other gateways since (``revoked``).

    Concurrency rule: event-loop only (``record`` runs in authentication, ``take`` in
    the flush before it hands the batch to a thread).
    """

    def __init__(self) -> None:
        self._pending: dict[str, float] = {}
        self.revoked = RevokedKeys()

    def record(self, key_id: str, at: float) -> None:
        self._pending[key_id] = at

    def pending(self, key_id: str) -> float | None:
        return self._pending.get(key_id)

    def take(self) -> dict[str, float]:
        taken, self._pending = self._pending, {}
        return taken

    def put_back(self, uses: dict[str, float]) -> None:
        """A batch the store refused: kept (newer uses win) for the next flush."""
        for key_id, at in uses.items():
            if self._pending.get(key_id, 0.0) < at:
                self._pending[key_id] = at


class RevokedKeys:
    """Revoked keys that the directory served now may still list, each with the store
    generation of its revocation: added as soon as a revocation is known (made here, or
    read from the store's short list when the generation moves) and dropped once a
    directory built from a snapshot at or past that generation is served. Authentication
    refuses them, so no revocation waits for a rebuild (linear in the number of keys).

    Concurrency rule: written on the event loop; read by authentication. Every write
    replaces the mapping whole, so a reader in any thread sees one version or the other.
    """

    def __init__(self) -> None:
        self._ids: Mapping[str, int] = {}

    def __contains__(self, key_id: str) -> bool:
        return key_id in self._ids

    def add(self, revoked: Mapping[str, int]) -> None:
        self._ids = {**self._ids, **revoked}

    def served_up_to(self, generation: int) -> None:
        """A directory from the snapshot at ``generation`` is served: it lists none of
        the keys revoked up to there."""
        self._ids = {k: gen for k, gen in self._ids.items() if gen > generation}
