from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter

from gateway.api.deps import CallerDep, CatalogDep, EmbeddingsDep
from gateway.errors import ModelNotFoundError
from gateway.model_catalog import ModelCatalog
from gateway.protocol.common import ModelCard, ModelList
from gateway.tenancy.directory import Caller

router = APIRouter()


def visible_cards(
    catalog: ModelCatalog, caller: Caller, extra: Sequence[ModelCard] = ()
) -> list[ModelCard]:
    """What this caller may use: its allowed models (of the catalog's and ``extra``, the
    embedding models) and its aliases (parent: the base)."""
    cards = {c.id: c for c in [*catalog.cards(), *extra]}
    out = []
    visible = caller.directory.visible(caller, list(cards)) if caller.directory else []
    for model_id, alias_target in visible:
        if alias_target is None:
            out.append(cards[model_id])
        else:
            out.append(
                ModelCard(
                    id=model_id,
                    root=model_id,
                    parent=catalog.base_id,
                    max_model_len=catalog.max_model_len,
                )
            )
    return out


@router.get("/v1/models")
async def list_models(
    catalog: CatalogDep, embeddings: EmbeddingsDep, caller: CallerDep
) -> ModelList:
    return ModelList(data=visible_cards(catalog, caller, [embeddings.card()]))


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(
    model_id: str, catalog: CatalogDep, embeddings: EmbeddingsDep, caller: CallerDep
) -> ModelCard:
    if caller.tenant is None:
        if model_id == embeddings.model_id:
            return embeddings.card()
        return catalog.card(model_id)
    for card in visible_cards(catalog, caller, [embeddings.card()]):
        if card.id == model_id:
            return card
    raise ModelNotFoundError(model_id)
