"""``ModelCatalog``: which ``model`` ids this gateway serves and what each one means."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol

from adapters.errors import AdapterNotFoundError, BaseModelMismatchError
from adapters.manifest import AdapterEntry, AdapterStatus
from adapters.namespace_sources import AdapterSourceSpec
from adapters.registry import AdapterRegistry
from adapters.traffic_split import ShadowConfig, bucket, choose
from gateway.engine.interface import AdapterRef
from gateway.errors import ModelNotFoundError
from gateway.protocol.common import ModelCard


@dataclass(frozen=True)
class ServedModel:
    """A resolved ``model`` field: the base model, or the base with one adapter version."""

    id: str
    adapter: AdapterRef | None = None
    split: bool = False
    """The version was chosen by the adapter's traffic split (``adapters.traffic_split``)."""
    shadow: AdapterRef | None = None
    """The split's shadow version (not the one chosen): a share of requests goes there too."""
    shadow_percent: int = 0
    """That share, in percent."""

    @property
    def adapter_label(self) -> str | None:
        """The ``adapter`` metric label: the name, or ``name@version`` for a version
        chosen by a split (so each side of a split has its own series)."""
        if self.adapter is None:
            return None
        a = self.adapter
        return f"{a.name}@{a.version}" if self.split else a.name


def engine_ref(entry: AdapterEntry) -> AdapterRef:
    """The engine's view of a registry entry: its never-reused id and its stored copy."""
    return AdapterRef(
        name=entry.name, version=entry.version, lora_id=entry.lora_int_id, path=str(entry.path)
    )


TENANT_SOURCE_PREFIX = "tenant:"
"""How the registry entry of an adapter fetched from a tenant's source starts its
``source``: ``tenant:<tenant>:<store>``. Only that tenant's requests resolve it."""


def source_owner(entry: AdapterEntry) -> str | None:
    """The tenant whose adapter source ``entry`` came from; None for a registered one."""
    if not entry.source.startswith(TENANT_SOURCE_PREFIX):
        return None
    return entry.source[len(TENANT_SOURCE_PREFIX) :].partition(":")[0]


class FetchNeeded(ModelNotFoundError):
    """The caller's tenant has an adapter source that may hold ``model``: fetch it
    (``ModelCatalog.fetch``), then route again. Anywhere else it is the usual 404."""

    def __init__(self, model: str, tenant: str, spec: AdapterSourceSpec) -> None:
        super().__init__(model)
        self.tenant = tenant
        self.spec = spec


class TenantAdapters(Protocol):
    """Adapters fetched from tenants' sources (``gateway.adapter_runtime.on_demand``)."""

    def lookup(self, tenant: str, model: str) -> AdapterEntry | None:
        """The tenant's servable entry for ``model``; None when the source must be asked.

        Raises ``ModelNotFoundError`` for a name no source may hold or one remembered as
        missing, and the remembered error of an adapter the registry refused.
        """
        ...

    async def fetch(self, tenant: str, model: str, spec: AdapterSourceSpec) -> None:
        """Fetch, validate, register and load ``model`` from the source (once, however
        many requests ask at the same time)."""
        ...


class ModelCatalog:
    """The base model plus every servable adapter version of the registry.

    ``model`` is the base id, an adapter name (its active version) or ``name@version``.
    Resolution reads the registry's current state once, so a request gets exactly one
    version and keeps it (its ``AdapterRef``) to the end, whatever is activated or
    retired meanwhile. Holds no state of its own besides the base id; safe to share.
    """

    def __init__(
        self,
        base_id: str,
        registry: AdapterRegistry,
        max_model_len: int,
        tenant_adapters: TenantAdapters | None = None,
    ) -> None:
        self.base_id = base_id
        self.max_model_len = max_model_len
        self._registry = registry
        self._tenant_adapters = tenant_adapters
        self._created = int(time.time())

    def resolve(self, model: str, caller: str | None = None) -> ServedModel:
        """``model`` as served now. With ``caller`` (the sticky key: the request's
        ``user``, else its API key id), a name with a traffic split resolves to the
        version the caller's bucket falls in; ``name@version`` ignores splits."""
        if model == self.base_id:
            return ServedModel(id=model)
        if caller is not None:
            chosen = self._split_choice(model, caller)
            if chosen is not None:
                return chosen
        try:
            entry = self._registry.resolve(model)
        except (AdapterNotFoundError, BaseModelMismatchError):
            # Validated for another base model: this gateway cannot serve it (the
            # registry's own 422 is for the admin API, not for a client's request).
            raise ModelNotFoundError(model) from None
        if source_owner(entry) is not None:  # a tenant's own: only through its namespace
            raise ModelNotFoundError(model)
        return ServedModel(id=model, adapter=engine_ref(entry))

    def _split_choice(self, model: str, caller: str) -> ServedModel | None:
        split = self._registry.split(model)
        if split is None:
            return None
        order = {e.version: e.lora_int_id for e in self._registry.entries(model)}
        ordered = sorted(split.weights.items(), key=lambda vw: order.get(vw[0], 0))
        version = choose(ordered, bucket(model, caller))
        try:
            entry = self._registry.resolve(f"{model}@{version}")
        except (AdapterNotFoundError, BaseModelMismatchError):
            return None  # retired meanwhile: the active version serves
        if source_owner(entry) is not None:
            return None
        shadow = self._shadow_of(model, split.shadow, version)
        return ServedModel(
            id=model,
            adapter=engine_ref(entry),
            split=True,
            shadow=shadow,
            shadow_percent=split.shadow.percent if shadow is not None and split.shadow else 0,
        )

    def _shadow_of(self, model: str, shadow: ShadowConfig | None, chosen: str) -> AdapterRef | None:
        """The shadow version's engine ref; None without one, or for the callers whose
        bucket chose that version anyway."""
        if shadow is None or shadow.version == chosen:
            return None
        try:
            return engine_ref(self._registry.resolve(f"{model}@{shadow.version}"))
        except (AdapterNotFoundError, BaseModelMismatchError):
            return None

    def resolve_sourced(self, tenant: str, model: str, spec: AdapterSourceSpec) -> ServedModel:
        """``model`` in ``tenant``'s adapter namespace; ``FetchNeeded`` if not held yet."""
        if self._tenant_adapters is None:
            raise ModelNotFoundError(model)
        entry = self._tenant_adapters.lookup(tenant, model)
        if entry is None:
            raise FetchNeeded(model, tenant, spec)
        return ServedModel(id=model, adapter=engine_ref(entry))

    async def fetch(self, pending: FetchNeeded) -> None:
        """Bring ``pending.model`` from its tenant's source into the registry and engine."""
        if self._tenant_adapters is None:
            raise ModelNotFoundError(pending.model)
        await self._tenant_adapters.fetch(pending.tenant, pending.model, pending.spec)

    def _base_card(self) -> ModelCard:
        return ModelCard(
            id=self.base_id,
            created=self._created,
            root=self.base_id,
            max_model_len=self.max_model_len,
        )

    def _adapter_card(self, model: str, entry: AdapterEntry) -> ModelCard:
        return ModelCard(
            id=model,
            created=int(entry.created_at.timestamp()),
            root=entry.ref,
            parent=self.base_id,
            max_model_len=self.max_model_len,
        )

    def cards(self) -> list[ModelCard]:
        """The base model and every adapter name with an active version (``root``: it)."""
        active = [
            e
            for e in self._registry.entries()
            if e.status is AdapterStatus.ACTIVE and source_owner(e) is None
        ]
        return [self._base_card()] + [self._adapter_card(e.name, e) for e in active]

    def card(self, model: str) -> ModelCard:
        """Any servable id, ``name@version`` included."""
        if model == self.base_id:
            return self._base_card()
        try:
            entry = self._registry.resolve(model)
        except AdapterNotFoundError:
            raise ModelNotFoundError(model) from None
        if source_owner(entry) is not None:
            raise ModelNotFoundError(model)
        return self._adapter_card(model, entry)
