"""Admin API with a fake engine: register (path, upload, URI), versions, listing, pins."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.admin_requests import (
    ADMIN,
    chat,
    new_adapter,
    register,
    tar_gz_of,
    upload,
    zip_of,
)


async def test_config_adapters_are_imported_as_versions(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.get("/admin/adapters", headers=ADMIN)
    assert r.status_code == 200
    body = r.json()
    assert [a["name"] for a in body["data"]] == ["pirate", "robot"]
    pirate = body["data"][0]
    assert pirate["active_version"] == "v1"
    (v1,) = pirate["versions"]
    assert v1["ref"] == "pirate@v1" and v1["lora_id"] == 1 and v1["status"] == "active"
    assert v1["source"].startswith("local:") and len(v1["sha256"]) == 64
    assert (v1["rank"], v1["target_modules"]) == (8, ["q_proj", "k_proj", "v_proj", "o_proj"])
    # Activated config adapters were loaded before traffic.
    assert [a.engine_name for a in fake_gateway.engine.added] == ["pirate@v1", "robot@v1"]
    assert v1["residency"] == "cpu_cache" and body["slots_known"] is False


async def test_register_from_a_path_then_chat_with_it(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client = fake_gateway.client
    r = await register(client, "support", new_adapter(fake_kit, seed=11))
    assert r.status_code == 201, r.text
    entry = r.json()
    assert (entry["ref"], entry["status"], entry["lora_id"]) == ("support@v1", "active", 3)
    assert entry["residency"] == "cpu_cache"  # loaded before it was activated
    reply = await chat(client, "support")
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"].startswith("support0w0")
    adapter = fake_gateway.engine.requests[-1].adapter
    assert adapter is not None and (adapter.version, adapter.lora_id) == ("v1", 3)
    assert adapter.path.endswith("adapters/support/v1")  # the registry's validated copy
    legacy = await client.post(
        "/v1/completions", json={"model": "support@v1", "prompt": "Hi", "max_tokens": 1}
    )
    assert legacy.status_code == 200 and legacy.json()["choices"][0]["text"] == "support0w0 "
    models = (await client.get("/v1/models")).json()["data"]
    card = next(m for m in models if m["id"] == "support")
    assert (card["root"], card["parent"]) == ("support@v1", "tiny-base")


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
async def test_register_from_an_upload_then_chat_with_it(
    fake_gateway: FakeGateway, fake_kit: FakeKit, kind: str
) -> None:
    folder = new_adapter(fake_kit, seed=12)
    data = zip_of(folder) if kind == "zip" else tar_gz_of(folder)
    r = await upload(fake_gateway.client, "uploaded", f"adapter.{kind}", data, version="2024-06")
    assert r.status_code == 201, r.text
    assert r.json()["ref"] == "uploaded@2024-06"
    assert r.json()["source"] == f"upload:adapter.{kind}"
    reply = await chat(fake_gateway.client, "uploaded@2024-06")
    assert reply.status_code == 200
    assert reply.json()["model"] == "uploaded@2024-06"


@pytest.fixture
def memory_uri() -> Iterator[str]:
    uri = f"memory://bucket-{uuid.uuid4().hex}/adapter"
    yield uri
    fs = fsspec.filesystem("memory")
    if fs.exists(uri):
        fs.rm(uri, recursive=True)


async def test_register_from_a_uri_then_chat_with_it(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, memory_uri: str
) -> None:
    fs = fsspec.filesystem("memory")
    for file in new_adapter(fake_kit, seed=13).iterdir():
        fs.pipe(f"{memory_uri}/{file.name}", file.read_bytes())
    # memory:// (process-wide scratch space) is not a default protocol: opt in.
    registry = {
        "data_dir": tmp_path / "registry",
        "allowed_roots": [fake_kit.adapter_root],
        "allowed_protocols": ["memory"],
    }
    settings = fake_settings(fake_kit, tmp_path, registry=registry)
    async with run_fake_gateway(settings, renderer) as gateway:
        r = await gateway.client.post(
            "/admin/adapters", json={"name": "remote", "uri": memory_uri}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        assert r.json()["source"] == f"uri:{memory_uri}"
        assert (await chat(gateway.client, "remote")).status_code == 200


async def test_versions_name_at_version_and_activation(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client, engine = fake_gateway.client, fake_gateway.engine
    await register(client, "tone", new_adapter(fake_kit, seed=21))
    r = await register(client, "tone", new_adapter(fake_kit, seed=22), activate=False)
    assert (r.json()["version"], r.json()["status"]) == ("v2", "inactive")
    assert "tone@v2" not in [a.engine_name for a in engine.added]  # inactive: not loaded

    for model, version in (("tone", "v1"), ("tone@v2", "v2"), ("tone@v1", "v1")):
        assert (await chat(client, model)).status_code == 200
        adapter = engine.requests[-1].adapter
        assert adapter is not None and adapter.version == version, model
    missing = await chat(client, "tone@v9")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"

    r = await client.post("/admin/adapters/tone/activate", json={"version": "v2"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["active_version"] == "v2"
    assert engine.added[-1].engine_name == "tone@v2"  # loaded before the switch
    await chat(client, "tone")
    adapter = engine.requests[-1].adapter
    assert adapter is not None and adapter.version == "v2"
    card = (await client.get("/v1/models/tone")).json()
    assert card["root"] == "tone@v2"


async def test_retire_stops_serving_at_once_and_removes_after_draining(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client = fake_gateway.client
    await register(client, "old", new_adapter(fake_kit, seed=31))
    lora_id = (await client.get("/admin/adapters/old", headers=ADMIN)).json()["versions"][0][
        "lora_id"
    ]
    r = await client.delete("/admin/adapters/old", headers=ADMIN)
    assert r.status_code == 200 and r.json()["retired"] == ["old@v1"]
    for model in ("old", "old@v1"):
        refused = await chat(client, model)
        assert refused.status_code == 404
        assert refused.json()["error"]["code"] == "model_not_found"
    await fake_gateway.app.state.gateway.lifecycle.wait_for_drains()
    assert lora_id in fake_gateway.engine.removed
    gone = await client.get("/admin/adapters/old", headers=ADMIN)
    assert gone.status_code == 404
    assert "old" not in {m["id"] for m in (await client.get("/v1/models")).json()["data"]}
    # Versions are never reused, even after removal.
    again = await register(client, "old", new_adapter(fake_kit, seed=32), version="v1")
    assert again.status_code == 409 and again.json()["error"]["code"] == "adapter_version_exists"


async def test_listing_reports_residency_and_request_counts(fake_gateway: FakeGateway) -> None:
    client, engine = fake_gateway.client, fake_gateway.engine
    for _ in range(3):
        await chat(client, "pirate")
    await chat(client, "pirate@v1")
    engine.slots = frozenset({1})
    engine.loaded.discard(2)
    body = (await client.get("/admin/adapters", headers=ADMIN)).json()
    assert body["slots_known"] is True
    pirate, robot = body["data"]
    assert pirate["requests_total"] == 4 and pirate["versions"][0]["in_flight"] == 0
    assert pirate["versions"][0]["residency"] == "gpu_slot"
    assert robot["versions"][0]["residency"] == "disk"
    assert robot["requests_total"] == 0


async def test_prewarm_pin_and_unpin(fake_gateway: FakeGateway, fake_kit: FakeKit) -> None:
    client, engine = fake_gateway.client, fake_gateway.engine
    await register(client, "hot", new_adapter(fake_kit, seed=41))
    await register(client, "hot", new_adapter(fake_kit, seed=42), activate=False)
    r = await client.post("/admin/adapters/hot/prewarm", json={"version": "v2"}, headers=ADMIN)
    assert r.status_code == 200
    assert engine.added[-1].engine_name == "hot@v2"

    r = await client.post("/admin/adapters/hot/pin", headers=ADMIN)
    assert r.status_code == 200
    v1 = r.json()["versions"][0]
    assert v1["pinned"] is True and engine.pinned == [v1["lora_id"]]
    refused = await client.delete("/admin/adapters/hot", headers=ADMIN)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "adapter_pinned"

    r = await client.post("/admin/adapters/hot/unpin", json={"version": "v1"}, headers=ADMIN)
    assert r.json()["versions"][0]["pinned"] is False
    assert engine.removed[-1] == v1["lora_id"] and engine.added[-1].engine_name == "hot@v1"
    assert (await client.delete("/admin/adapters/hot", headers=ADMIN)).status_code == 200


async def test_pins_leave_a_slot_for_unpinned_adapters(fake_gateway: FakeGateway) -> None:
    # max_loras 4 (default) minus a reserve of 1: three pins.
    client = fake_gateway.client
    assert (await client.post("/admin/adapters/pirate/pin", headers=ADMIN)).status_code == 200
    assert (await client.post("/admin/adapters/robot/pin", headers=ADMIN)).status_code == 200
    third = await client.post("/admin/adapters/pirate/pin", json={"version": "v1"}, headers=ADMIN)
    assert third.status_code == 200  # pinning again is a no-op
    r = await client.get("/admin/adapters", headers=ADMIN)
    assert sum(v["pinned"] for a in r.json()["data"] for v in a["versions"]) == 2


async def test_pin_limit(fake_gateway: FakeGateway, fake_kit: FakeKit) -> None:
    client = fake_gateway.client
    await register(client, "p3", new_adapter(fake_kit, seed=51))
    await register(client, "p4", new_adapter(fake_kit, seed=52))
    for name in ("pirate", "robot", "p3"):
        assert (await client.post(f"/admin/adapters/{name}/pin", headers=ADMIN)).status_code == 200
    r = await client.post("/admin/adapters/p4/pin", headers=ADMIN)
    assert r.status_code == 409 and r.json()["error"]["code"] == "pin_limit_reached"


async def test_registry_conflicts_are_409(fake_gateway: FakeGateway, fake_kit: FakeKit) -> None:
    base_name = await register(fake_gateway.client, "tiny-base", new_adapter(fake_kit, seed=61))
    assert base_name.status_code == 409
    assert base_name.json()["error"]["code"] == "adapter_name_taken"
    retire_missing = await fake_gateway.client.delete("/admin/adapters/nobody", headers=ADMIN)
    assert retire_missing.status_code == 404


async def test_registration_request_validation(fake_gateway: FakeGateway) -> None:
    client = fake_gateway.client
    both = await client.post(
        "/admin/adapters", json={"name": "x", "path": "/a", "uri": "memory://b"}, headers=ADMIN
    )
    assert both.status_code == 400 and both.json()["error"]["code"] == "invalid_value"
    extra = await client.post(
        "/admin/adapters", json={"name": "x", "path": "/a", "evil": 1}, headers=ADMIN
    )
    assert extra.status_code == 400 and extra.json()["error"]["code"] == "unknown_parameter"
    broken = await client.post(
        "/admin/adapters",
        content=b"{nope",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    no_file = await client.post(
        "/admin/adapters", data={"name": "x"}, files={"f": b""}, headers=ADMIN
    )
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    huge = await client.post(
        "/admin/adapters",
        content=b"{" + b" " * 5000 + b"}",
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert huge.status_code == 413  # the JSON limit (4096 here) still applies
