"""``/admin/tenants`` and ``/admin/audit`` on one gateway (SQLite store, fake engine):
keys made, used, listed and revoked; tenants made, edited and deleted; every refusal in
OpenAI's error shape; concurrent changes; the config file's precedence."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.tenancy.sqlite_tenant_store import tenant_db_path
from tests.conftest import FakeKit
from tests.support.tenant_admin_support import (
    ADMIN,
    ADMIN_KEY,
    FILE_KEY,
    Gateway,
    started,
    tenant_config,
)


@pytest.fixture
async def gw(fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer) -> AsyncIterator[Gateway]:
    config = tenant_config(fake_kit, tmp_path / "data")
    async with started(config, tmp_path / "gw", renderer) as gateway:
        yield gateway


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


async def test_a_key_made_over_the_api_works_until_revoked(gw: Gateway) -> None:
    made = await gw.new_key("acme", name="ci", expires_at=int(time.time()) + 3600)
    assert set(made) == {"id", "key", "name", "created_at", "expires_at"}
    assert made["key"].startswith(f"lg-{made['id']}-")
    assert (await gw.chat(made["key"])).status_code == 200

    listed = (await gw.client.get("/admin/tenants/acme/keys", headers=ADMIN)).json()
    (entry,) = listed["data"]
    assert set(entry) == {
        "id", "name", "created_at", "expires_at", "last_used_at", "budget", "spent"
    }  # fmt: skip
    assert entry["id"] == made["id"] and entry["last_used_at"] is not None
    secret = made["key"].removeprefix(f"lg-{made['id']}-")
    assert secret not in str(listed) and "sha256" not in str(listed)
    assert entry["spent"]["tokens"] > 0 and entry["spent"]["period"].startswith("month:")

    r = await gw.client.delete(f"/admin/tenants/acme/keys/{made['id']}", headers=ADMIN)
    assert r.status_code == 200 and r.json() == {
        "id": made["id"],
        "object": "api_key",
        "deleted": True,
    }
    assert error_of(await gw.chat(made["key"]), 401)["code"] == "invalid_api_key"
    assert (await gw.chat(FILE_KEY.key)).status_code == 200  # the file's key is untouched
    listed = (await gw.client.get("/admin/tenants/acme/keys", headers=ADMIN)).json()
    assert listed == {"data": []}


async def test_keys_survive_a_restart_and_a_config_reload(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    config = tenant_config(fake_kit, tmp_path / "data")
    async with started(config, tmp_path / "gw", renderer) as gw:
        made = await gw.new_key("acme")
        r = await gw.client.post("/admin/config/reload", headers=ADMIN)
        assert r.status_code == 200, r.text
        assert (await gw.chat(made["key"])).status_code == 200
    async with started(config, tmp_path / "gw", renderer) as gw:
        assert (await gw.chat(made["key"])).status_code == 200


async def test_the_one_404_for_unknown_tenants_keys_and_other_tenants_keys(gw: Gateway) -> None:
    r = await gw.client.post(
        "/admin/tenants", json={"name": "globex", "models": ["robot"]}, headers=ADMIN
    )
    assert r.status_code == 201, r.text
    globex = await gw.new_key("globex")
    bodies = []
    for method, path in (
        ("DELETE", "/admin/tenants/nobody/keys/0123456789ab"),
        ("DELETE", "/admin/tenants/acme/keys/0123456789ab"),
        ("DELETE", f"/admin/tenants/acme/keys/{globex['id']}"),  # another tenant's
        ("GET", "/admin/tenants/nobody/keys"),
        ("POST", "/admin/tenants/nobody/keys"),
    ):
        body = {"name": "x"} if method == "POST" else None
        r = await gw.client.request(method, path, json=body, headers=ADMIN)
        bodies.append(error_of(r, 404))
    assert all(b == bodies[0] for b in bodies), bodies
    assert (await gw.chat(globex["key"], model="robot")).status_code == 200  # not revoked


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "x", "expires_at": 1_000_000}, "expires_at"),
        ({"name": "x", "budget": {"period": "day", "max_tokens": -1}}, "budget.max_tokens"),
        ({"name": "x", "budget": {"period": "week"}}, "budget.period"),
        ({"name": "x" * 65}, "name"),
        ({"name": ""}, "name"),
        ({}, "name"),
        ({"name": "x", "secret": "y"}, "secret"),
        ({"name": "x", "models": "pirate"}, "models"),
    ],
)
async def test_key_refusals_name_the_field(gw: Gateway, body: dict[str, Any], param: str) -> None:
    r = await gw.client.post("/admin/tenants/acme/keys", json=body, headers=ADMIN)
    error = error_of(r, 400)
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert (await gw.client.get("/admin/tenants/acme/keys", headers=ADMIN)).json()["data"] == []


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": "admin"}, "name"),
        ({"name": "t", "weight": 0}, "weight"),
        ({"name": "t", "max_in_flight": 0}, "max_in_flight"),
        ({"name": "t", "colour": "red"}, "colour"),
        ({"name": "t", "keys": []}, "keys"),
        ({"name": "t", "policy": {"prompts": ["nope"]}}, "policy.prompts"),
        ({"name": "t", "policy": {"system_prompt": "{secret}"}}, "policy.system_prompt"),
        ({"name": "t", "models": ["a"], "default_model": "b"}, None),
        ({"name": "t", "policy": {"rag": {"collections": ["docs"]}}}, "policy.rag.collections"),
        ({"name": "t", "budget": {"period": "month", "max_cost": -0.5}}, "budget.max_cost"),
    ],
)
async def test_tenant_refusals_are_the_config_schemas(
    gw: Gateway, body: dict[str, Any], param: str | None
) -> None:
    error = error_of(await gw.client.post("/admin/tenants", json=body, headers=ADMIN), 400)
    assert error["param"] == param, error
    assert [
        t["name"] for t in (await gw.client.get("/admin/tenants", headers=ADMIN)).json()["data"]
    ] == ["acme"]


async def test_tenant_lifecycle_and_the_audit_log(gw: Gateway) -> None:
    body = {"name": "globex", "models": ["robot", "tiny-base"], "policy": {"prompts": ["tone"]}}
    r = await gw.client.post("/admin/tenants", json=body, headers=ADMIN)
    assert r.status_code == 201, r.text
    assert r.json()["source"] == "api" and r.json()["models"] == ["robot", "tiny-base"]
    error_of(await gw.client.post("/admin/tenants", json=body, headers=ADMIN), 409)
    key = (await gw.new_key("globex"))["key"]
    assert (await gw.chat(key, model="robot")).status_code == 200
    assert (await gw.chat(key, model="pirate")).status_code == 404

    r = await gw.client.patch("/admin/tenants/globex", json={"models": ["pirate"]}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["policy"]["prompts"] == ["tone"]
    assert (await gw.chat(key, model="pirate")).status_code == 200
    assert (await gw.chat(key, model="robot")).status_code == 404
    error_of(
        await gw.client.patch("/admin/tenants/globex", json={"weight": -1}, headers=ADMIN), 400
    )
    assert (
        await gw.chat(key, model="pirate")
    ).status_code == 200  # the refused edit changed nothing

    r = await gw.client.delete("/admin/tenants/globex", headers=ADMIN)
    assert r.status_code == 200 and r.json()["revoked_keys"] == [key.split("-")[1]]
    assert (await gw.chat(key, model="pirate")).status_code == 401
    error_of(await gw.client.get("/admin/tenants/globex", headers=ADMIN), 404)

    entries = await gw.audit()
    assert [e["action"] for e in entries] == [
        "tenant.delete", "tenant.update", "key.create", "tenant.create"
    ]  # fmt: skip
    assert {e["actor"] for e in entries} == {f"key:{ADMIN_KEY.key_id}"}
    assert entries[1]["detail"] == {"fields": ["models"], "version": 2}
    assert entries[-1]["detail"] == {"fields": ["models", "policy"], "version": 1}  # no text
    assert all(e["tenant"] == "globex" for e in entries)
    assert entries[0]["seq"] > entries[-1]["seq"]


async def test_config_file_tenants_are_read_only_over_the_api(gw: Gateway) -> None:
    (acme,) = (await gw.client.get("/admin/tenants", headers=ADMIN)).json()["data"]
    assert acme["name"] == "acme" and acme["source"] == "config" and "keys" not in acme
    for method, body in (("PATCH", {"weight": 2}), ("DELETE", None)):
        r = await gw.client.request(method, "/admin/tenants/acme", json=body, headers=ADMIN)
        assert error_of(r, 409)["code"] == "tenant_in_config"
    r = await gw.client.post("/admin/tenants", json={"name": "acme"}, headers=ADMIN)
    assert error_of(r, 409)["code"] == "tenant_in_config"


async def test_an_api_tenant_the_file_later_defines_is_the_files(gw: Gateway) -> None:
    await gw.client.post(
        "/admin/tenants", json={"name": "globex", "models": ["robot"]}, headers=ADMIN
    )
    key = (await gw.new_key("globex"))["key"]
    config = tenant_config_from(gw)
    config["tenants"]["globex"] = {"models": ["pirate"]}
    gw.config_path.write_text(yaml.safe_dump(config))
    assert (await gw.client.post("/admin/config/reload", headers=ADMIN)).status_code == 200
    assert (await gw.chat(key, model="pirate")).status_code == 200  # the file's definition
    assert (await gw.chat(key, model="robot")).status_code == 404
    (globex,) = [
        t
        for t in (await gw.client.get("/admin/tenants", headers=ADMIN)).json()["data"]
        if t["name"] == "globex"
    ]
    assert globex["source"] == "config"


def tenant_config_from(gw: Gateway) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(gw.config_path.read_text())
    return data


async def test_a_key_with_models_calls_only_those(gw: Gateway) -> None:
    key = (await gw.new_key("acme", models=["pirate"]))["key"]
    assert (await gw.chat(key, model="pirate")).status_code == 200
    assert (await gw.chat(key, model="tiny-base")).status_code == 404
    r = await gw.client.get("/v1/models", headers={"Authorization": f"Bearer {key}"})
    assert [m["id"] for m in r.json()["data"]] == ["pirate"]


async def test_an_expired_key_gets_401(gw: Gateway) -> None:
    made = await gw.new_key("acme", expires_at=int(time.time()) + 2)
    assert (await gw.chat(made["key"])).status_code == 200
    await asyncio.sleep(max(0.0, made["expires_at"] - time.time()) + 0.05)
    assert error_of(await gw.chat(made["key"]), 401)["code"] == "expired_api_key"


async def test_last_use_is_written_in_batches(gw: Gateway) -> None:
    made = await gw.new_key("acme")
    db = tenant_db_path(gw.state.settings.registry.data_dir)

    def stored() -> Any:
        with sqlite3.connect(db) as conn:
            return conn.execute(
                "SELECT last_used_at FROM loragate_api_keys WHERE id = ?", (made["id"],)
            ).fetchone()[0]

    for _ in range(3):
        assert (await gw.chat(made["key"])).status_code == 200
    assert stored() is None  # no database write on the request path
    await gw.state.tenant_admin.flush_uses()
    assert stored() == pytest.approx(time.time(), abs=5)


async def test_concurrent_revocations_and_edits_leave_one_state(gw: Gateway) -> None:
    made = await gw.new_key("acme")
    path = f"/admin/tenants/acme/keys/{made['id']}"
    answers = await asyncio.gather(*(gw.client.delete(path, headers=ADMIN) for _ in range(2)))
    assert [a.status_code for a in answers] == [200, 200]
    revokes = [e for e in await gw.audit() if e["action"] == "key.revoke"]
    assert sorted(e["detail"]["outcome"] for e in revokes) == ["already_revoked", "revoked"]
    assert (await gw.chat(made["key"])).status_code == 401

    await gw.client.post(
        "/admin/tenants", json={"name": "globex", "models": ["robot"]}, headers=ADMIN
    )
    edits = [{"weight": 3}, {"collections": ["docs"]}, {"max_in_flight": 2}]
    answers = await asyncio.gather(
        *(gw.client.patch("/admin/tenants/globex", json=e, headers=ADMIN) for e in edits)
    )
    assert all(a.status_code == 200 for a in answers)
    final = (await gw.client.get("/admin/tenants/globex", headers=ADMIN)).json()
    assert (final["weight"], final["collections"], final["max_in_flight"]) == (3, ["docs"], 2)
    updates = [e for e in await gw.audit() if e["action"] == "tenant.update"]
    assert sorted(e["detail"]["version"] for e in updates) == [2, 3, 4]


async def test_deleting_the_last_api_tenant_keeps_keys_required(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    config = tenant_config(fake_kit, tmp_path / "data", tenants={})
    config["admin"]["api_key"] = "an-admin-key-long-enough-0123"
    async with started(config, tmp_path / "gw", renderer) as gw:
        await gw.client.post(
            "/admin/tenants", json={"name": "solo", "models": ["*"]}, headers=ADMIN
        )
        key = (await gw.new_key("solo"))["key"]
        assert (await gw.chat(key)).status_code == 200
        assert (await gw.client.delete("/admin/tenants/solo", headers=ADMIN)).status_code == 200
        body = {"model": "pirate", "messages": [{"role": "user", "content": "hi"}]}
        r = await gw.client.post("/v1/chat/completions", json=body)
        assert r.status_code == 401  # not an open gateway now
        entries = await gw.audit()
        assert entries[0]["actor"] == f"key:{ADMIN_KEY.key_id}"
        other = {"Authorization": "Bearer an-admin-key-long-enough-0123"}
        await gw.client.post("/admin/tenants", json={"name": "two"}, headers=other)
        assert (await gw.audit())[0]["actor"] == "api_key"


async def test_the_audit_log_pages_and_needs_the_admin_key(gw: Gateway) -> None:
    for name in ("a1", "a2", "a3"):
        await gw.client.post("/admin/tenants", json={"name": name}, headers=ADMIN)
    first = (await gw.client.get("/admin/audit?limit=2", headers=ADMIN)).json()
    assert [e["tenant"] for e in first["data"]] == ["a3", "a2"] and first["has_more"]
    before = first["data"][-1]["seq"]
    rest = (await gw.client.get(f"/admin/audit?limit=2&before={before}", headers=ADMIN)).json()
    assert [e["tenant"] for e in rest["data"]] == ["a1"] and not rest["has_more"]
    file_key = {"Authorization": f"Bearer {FILE_KEY.key}"}
    assert (await gw.client.get("/admin/audit", headers=file_key)).status_code == 403
    assert (
        await gw.client.post("/admin/tenants/acme/keys", json={"name": "x"}, headers=file_key)
    ).status_code == 403
    assert (await gw.client.get("/admin/tenants")).status_code == 401


async def test_an_api_keys_budget_is_enforced_and_its_spend_listed(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    prices = {"pirate": {"input": 1000.0, "output": 2000.0}}
    config = tenant_config(fake_kit, tmp_path / "data", pricing={"models": prices})
    async with started(config, tmp_path / "gw", renderer) as gw:
        made = await gw.new_key("acme", budget={"period": "day", "max_tokens": 60})
        served = 0
        for _ in range(40):
            r = await gw.chat(made["key"])
            if r.status_code != 200:
                break
            served += r.json()["usage"]["total_tokens"]
        else:
            pytest.fail("the key's budget never refused it")
        assert error_of(r, 429)["code"] == "insufficient_quota"
        assert 0 < served <= 60
        assert (await gw.chat(FILE_KEY.key)).status_code == 200  # the tenant has no budget
        (entry,) = (await gw.client.get("/admin/tenants/acme/keys", headers=ADMIN)).json()["data"]
        assert entry["budget"] == {"period": "day", "max_tokens": 60, "max_cost": None}
        assert entry["spent"]["period"].startswith("day:")
        assert entry["spent"]["tokens"] == served and entry["spent"]["cost"] > 0


async def test_an_audit_page_past_int64_is_a_400(gw: Gateway) -> None:
    """Found by tests/test_api_fuzz.py: SQLite cannot bind it (it was a 500)."""
    r = await gw.client.get(f"/admin/audit?before={2**70}", headers=ADMIN)
    assert error_of(r, 400)["param"] == "query.before"  # as the other query parameters
