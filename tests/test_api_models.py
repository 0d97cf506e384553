"""Models, health and routing errors with a fake engine."""

from __future__ import annotations

from gateway.rag.embeddings import served_embedder_id
from gateway.settings import RetrievalSettings
from tests.conftest import FakeGateway


async def test_models_lists_base_and_adapters_with_parent(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.get("/v1/models")
    body = r.json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert set(cards) == {
        "tiny-base",
        "pirate",
        "robot",
        served_embedder_id(RetrievalSettings()),
    }  # + the embedder
    assert cards["tiny-base"]["parent"] is None
    assert cards["pirate"]["parent"] == "tiny-base"
    assert cards["robot"]["object"] == "model"
    assert cards["robot"]["max_model_len"] == 256


async def test_retrieve_model_and_unknown_model(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.get("/v1/models/pirate")
    assert r.status_code == 200 and r.json()["parent"] == "tiny-base"
    r = await fake_gateway.client.get("/v1/models/nope")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"


async def test_health_and_ready(fake_gateway: FakeGateway) -> None:
    assert (await fake_gateway.client.get("/health")).json() == {"status": "ok"}
    assert (await fake_gateway.client.get("/ready")).status_code == 200
    fake_gateway.engine.healthy = False
    r = await fake_gateway.client.get("/ready")
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "service_unavailable"


async def test_unknown_route_and_wrong_method_use_the_error_shape(
    fake_gateway: FakeGateway,
) -> None:
    r = await fake_gateway.client.get("/v1/nothing")
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = await fake_gateway.client.get("/v1/chat/completions")
    assert r.status_code == 405 and r.json()["error"]["type"] == "invalid_request_error"
