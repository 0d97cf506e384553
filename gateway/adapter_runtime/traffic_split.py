"""The gateway's side of traffic splits (``adapters.traffic_split``): setting and
clearing them from the admin API, and the metric labels they add.

The registry validates and saves a split (shared with every gateway on the same store,
like activation); each split version loads into the engine on its first request, as
any version does.
"""

from __future__ import annotations

import asyncio

from adapters.errors import AdapterNotFoundError
from adapters.registry import AdapterRegistry
from adapters.traffic_split import SplitOptions, TrafficSplit
from gateway.metrics import GatewayMetrics
from gateway.model_catalog import source_owner


def adapter_labels(registry: AdapterRegistry) -> set[str]:
    """The bounded values of the ``adapter`` metric label: every registered adapter name
    (tenants' fetched adapters excluded: they may be thousands) plus ``name@version``
    for each version in a traffic split, so each side of a split has its own series."""
    names = {e.name for e in registry.entries() if source_owner(e) is None}
    split_refs = {f"{s.name}@{v}" for s in registry.splits() if s.name in names for v in s.versions}
    return names | split_refs


async def set_split(
    registry: AdapterRegistry,
    metrics: GatewayMetrics,
    name: str,
    weights: dict[str, int],
    options: SplitOptions | None = None,
) -> TrafficSplit:
    """Save ``name``'s split (the registry refuses a bad one: 400 naming ``weights``,
    404 for an unknown name) and widen the label bounds to its versions at once.

    An adapter fetched from a tenant's source answers the unknown name's 404: requests
    reach it only through its tenant's namespace, which splits do not route."""
    check_splittable(registry, name)
    split = await asyncio.to_thread(registry.set_split, name, weights, options)
    metrics.labels.update(adapters=adapter_labels(registry))
    return split


async def clear_split(
    registry: AdapterRegistry, metrics: GatewayMetrics, name: str
) -> TrafficSplit | None:
    """End ``name``'s split; the split it had (None: none)."""
    old = await asyncio.to_thread(registry.clear_split, name)
    metrics.labels.update(adapters=adapter_labels(registry))
    return old


def check_splittable(registry: AdapterRegistry, name: str) -> None:
    """The unknown name's 404 for a name with no versions, or one fetched from a tenant's
    source (requests reach it only through its tenant's namespace, which splits do not
    route)."""
    entries = registry.entries(name)
    if not entries or any(source_owner(e) is not None for e in entries):
        raise AdapterNotFoundError(f"No adapter named {name!r}.", param="name")
