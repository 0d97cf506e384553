"""``MissMemory``: names a tenant's adapter source did not hold (or held an adapter the
registry refused), remembered for a while so repeated requests do not reach the store.

Each tenant has its own bounded memory (``per_tenant`` names, its oldest out first), so
a tenant asking for thousands of unknown names forgets only its own misses, never
another tenant's. At most ``max_tenants`` tenants have a memory; past it, the memory of
the tenant that missed least recently is dropped whole.

Concurrency rule: event loop only (no awaits inside; plain dicts).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace

from adapters.errors import AdapterError


@dataclass(frozen=True)
class Miss:
    """A remembered miss: until when, and the refusal (None: the source lacks the name)."""

    until: float
    error: AdapterError | None


class MissMemory:
    """Per-tenant bounded, expiring memory of misses (see the module)."""

    def __init__(
        self, ttl_seconds: float, per_tenant: int, max_tenants: int, clock: Callable[[], float]
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.per_tenant = per_tenant
        self.max_tenants = max_tenants
        self._clock = clock
        self._tenants: OrderedDict[str, OrderedDict[str, Miss]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(names) for names in self._tenants.values())

    @property
    def tenants(self) -> int:
        return len(self._tenants)

    def get(self, tenant: str, name: str) -> Miss | None:
        """The live miss of ``tenant``'s ``name``; an expired one is forgotten here.

        Its refusal is a fresh copy (same type, message, code, param) for each caller to
        raise: raising one shared error object from every request would chain every
        request's frames, and the locals they hold, onto its traceback until it expires."""
        names = self._tenants.get(tenant)
        miss = names.get(name) if names is not None else None
        if miss is None or names is None:
            return None
        if self._clock() >= miss.until:
            del names[name]
            if not names:
                del self._tenants[tenant]
            return None
        if miss.error is None:
            return miss
        return replace(miss, error=copy.copy(miss.error))

    def remember(self, tenant: str, name: str, error: AdapterError | None) -> None:
        if self.ttl_seconds <= 0:
            return
        names = self._tenants.get(tenant)
        if names is None:
            names = self._tenants[tenant] = OrderedDict()
        self._tenants.move_to_end(tenant)
        # A copy: the error itself goes on to be raised by every request waiting for
        # the same fetch, and its traceback would keep their frames for the whole TTL.
        kept = copy.copy(error) if error is not None else None
        names[name] = Miss(self._clock() + self.ttl_seconds, kept)
        names.move_to_end(name)
        while len(names) > self.per_tenant:
            names.popitem(last=False)
        while len(self._tenants) > self.max_tenants:
            self._tenants.popitem(last=False)
