"""``ModelCatalog``: which ``model`` ids this gateway serves and what each one means."""

from __future__ import annotations

import time
from dataclasses import dataclass

from adapters.errors import AdapterNotFoundError, BaseModelMismatchError
from adapters.manifest import AdapterEntry, AdapterStatus
from adapters.registry import AdapterRegistry
from gateway.engine.interface import AdapterRef
from gateway.errors import ModelNotFoundError
from gateway.protocol.common import ModelCard


@dataclass(frozen=True)
class ServedModel:
    """A resolved ``model`` field: the base model, or the base with one adapter version."""

    id: str
    adapter: AdapterRef | None = None


def engine_ref(entry: AdapterEntry) -> AdapterRef:
    """The engine's view of a registry entry: its never-reused id and its stored copy."""
    return AdapterRef(
        name=entry.name, version=entry.version, lora_id=entry.lora_int_id, path=str(entry.path)
    )


class ModelCatalog:
    """The base model plus every servable adapter version of the registry.

    ``model`` is the base id, an adapter name (its active version) or ``name@version``.
    Resolution reads the registry's current state once, so a request gets exactly one
    version and keeps it (its ``AdapterRef``) to the end, whatever is activated or
    retired meanwhile. Holds no state of its own besides the base id; safe to share.
    """

    def __init__(self, base_id: str, registry: AdapterRegistry, max_model_len: int) -> None:
        self.base_id = base_id
        self.max_model_len = max_model_len
        self._registry = registry
        self._created = int(time.time())

    def resolve(self, model: str) -> ServedModel:
        if model == self.base_id:
            return ServedModel(id=model)
        try:
            entry = self._registry.resolve(model)
        except (AdapterNotFoundError, BaseModelMismatchError):
            # Validated for another base model: this gateway cannot serve it (the
            # registry's own 422 is for the admin API, not for a client's request).
            raise ModelNotFoundError(model) from None
        return ServedModel(id=model, adapter=engine_ref(entry))

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
        active = [e for e in self._registry.entries() if e.status is AdapterStatus.ACTIVE]
        return [self._base_card()] + [self._adapter_card(e.name, e) for e in active]

    def card(self, model: str) -> ModelCard:
        """Any servable id, ``name@version`` included."""
        if model == self.base_id:
            return self._base_card()
        try:
            entry = self._registry.resolve(model)
        except AdapterNotFoundError:
            raise ModelNotFoundError(model) from None
        return self._adapter_card(model, entry)
