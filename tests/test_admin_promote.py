"""``POST /admin/adapters/{name}/promote`` on a gateway with a fake engine: it activates
the candidate only while the version the gate compared against is still active, ends a
split that names the candidate (leaves one that does not), and is audited."""

from __future__ import annotations

import json

import httpx

from tests.conftest import FakeGateway, FakeKit
from tests.support.admin_requests import ADMIN, PASSING_GATE, new_adapter, promote, register


async def versions(gw: FakeGateway, kit: FakeKit, *seeds: int) -> None:
    """More versions of ``pirate`` (v1 comes from the config and stays active)."""
    for seed in seeds:
        r = await register(gw.client, "pirate", new_adapter(kit, seed=seed), activate=False)
        assert r.status_code == 201, r.text


async def active(client: httpx.AsyncClient) -> str:
    return str((await client.get("/admin/adapters/pirate", headers=ADMIN)).json()["active_version"])


async def test_promote_activates_ends_the_split_naming_it_and_is_audited(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client = fake_gateway.client
    await versions(fake_gateway, fake_kit, 31)
    split = {"weights": {"v1": 90, "v2": 10}}
    assert (await client.put("/admin/adapters/pirate/split", json=split, headers=ADMIN)).is_success
    r = await promote(client, "v2", "v1")
    assert r.status_code == 200, r.text
    assert r.json()["active_version"] == "v2" and r.json()["split"] is None
    served = await client.post(
        "/v1/chat/completions",
        json={"model": "pirate", "messages": [{"role": "user", "content": "hi"}], "user": "u1"},
    )
    assert served.status_code == 200
    adapter = fake_gateway.engine.requests[-1].adapter
    assert adapter is not None and adapter.version == "v2"
    entry = (await client.get("/admin/audit", headers=ADMIN)).json()["data"][0]
    assert (entry["action"], entry["target"]) == ("adapter.promote", "pirate")
    assert entry["detail"] == {
        "version": "v2",
        "previous": "v1",
        "split_ended": {"v1": 90, "v2": 10},
        "gate": PASSING_GATE,
    }


async def test_a_split_without_the_candidate_is_left_alone(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client = fake_gateway.client
    await versions(fake_gateway, fake_kit, 32, 33)
    split = {"weights": {"v1": 50, "v2": 50}}
    assert (await client.put("/admin/adapters/pirate/split", json=split, headers=ADMIN)).is_success
    r = await promote(client, "v3", "v1")
    assert r.status_code == 200, r.text
    assert r.json()["active_version"] == "v3" and r.json()["split"] == {"v1": 50, "v2": 50}


async def test_a_changed_stable_version_is_a_409_and_changes_nothing(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client = fake_gateway.client
    await versions(fake_gateway, fake_kit, 34, 35)
    r = await promote(client, "v3", "v2")  # the gate compared with v2; v1 is active
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "stable_changed"
    assert r.json()["error"]["param"] == "stable"
    assert await active(client) == "v1"


async def test_unknown_names_versions_and_bad_bodies(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client = fake_gateway.client
    unknown = await promote(client, "v2", "v1", name="nobody")
    assert unknown.status_code == 404 and unknown.json()["error"]["param"] == "name"
    missing = await promote(client, "v9", "v1")
    assert missing.status_code == 404
    bad = await client.post(
        "/admin/adapters/pirate/promote",
        json={"version": "v2", "stable": "v1", "gate": {**PASSING_GATE, "margin": -1}},
        headers=ADMIN,
    )
    assert bad.status_code == 400
    assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
    nan = json.dumps(
        {"version": "v2", "stable": "v1", "gate": {**PASSING_GATE, "low": float("nan")}}
    )
    not_finite = await client.post(
        "/admin/adapters/pirate/promote",
        content=nan,
        headers={**ADMIN, "Content-Type": "application/json"},
    )
    assert not_finite.status_code == 400, not_finite.text
    no_key = await client.post(
        "/admin/adapters/pirate/promote",
        json={"version": "v2", "stable": "v1", "gate": PASSING_GATE},
    )
    assert no_key.status_code == 401
    assert await active(client) == "v1"
