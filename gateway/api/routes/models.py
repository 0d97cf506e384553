from __future__ import annotations

from fastapi import APIRouter

from gateway.api.deps import CatalogDep
from gateway.protocol.common import ModelCard, ModelList

router = APIRouter()


@router.get("/v1/models")
async def list_models(catalog: CatalogDep) -> ModelList:
    return ModelList(data=catalog.cards())


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, catalog: CatalogDep) -> ModelCard:
    return catalog.card(model_id)
