"""``ModelCatalog``: which ``model`` ids this gateway serves and what each one means."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.engine.interface import AdapterRef
from gateway.errors import ModelNotFoundError
from gateway.protocol.common import ModelCard


@dataclass(frozen=True)
class ServedModel:
    """A resolved ``model`` field: the base model, or the base with one adapter."""

    id: str
    adapter: AdapterRef | None = None


class ModelCatalog:
    """Base model plus the adapters from config, each with a stable engine LoRA id.

    Immutable after construction, so requests can read it without locks.
    """

    def __init__(self, base_id: str, adapters: list[AdapterRef], max_model_len: int) -> None:
        self.base_id = base_id
        self.max_model_len = max_model_len
        self._adapters = {a.name: a for a in adapters}
        self._created = int(time.time())

    @classmethod
    def from_paths(
        cls, base_id: str, adapter_paths: list[tuple[str, str]], max_model_len: int
    ) -> ModelCatalog:
        """Adapters get LoRA ids 1..N in config order (0 means "no adapter" in vLLM)."""
        refs = [
            AdapterRef(name=name, lora_id=i, path=path)
            for i, (name, path) in enumerate(adapter_paths, start=1)
        ]
        return cls(base_id, refs, max_model_len)

    def resolve(self, model: str) -> ServedModel:
        if model == self.base_id:
            return ServedModel(id=model)
        adapter = self._adapters.get(model)
        if adapter is None:
            raise ModelNotFoundError(model)
        return ServedModel(id=model, adapter=adapter)

    @property
    def adapters(self) -> list[AdapterRef]:
        return list(self._adapters.values())

    def cards(self) -> list[ModelCard]:
        base = ModelCard(
            id=self.base_id,
            created=self._created,
            root=self.base_id,
            max_model_len=self.max_model_len,
        )
        return [base] + [
            ModelCard(
                id=a.name,
                created=self._created,
                root=a.name,
                parent=self.base_id,
                max_model_len=self.max_model_len,
            )
            for a in self._adapters.values()
        ]

    def card(self, model: str) -> ModelCard:
        self.resolve(model)
        return next(c for c in self.cards() if c.id == model)
