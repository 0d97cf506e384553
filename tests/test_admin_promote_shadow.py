"""``POST /admin/adapters/{name}/promote`` for a candidate that ran as a split's shadow
(the shadow -> promote rollout): the promoted version serves every request afterwards,
and the refusals name their field. Fake engine, whole gateway over ASGI."""

from __future__ import annotations

from tests.conftest import FakeGateway, FakeKit
from tests.support.admin_requests import ADMIN, PASSING_GATE, new_adapter, promote, register


async def served_versions(gw: FakeGateway, users: int) -> set[str | None]:
    versions: set[str | None] = set()
    for i in range(users):
        body = {"model": "pirate", "messages": [{"role": "user", "content": "hi"}], "user": f"u{i}"}
        r = await gw.client.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        adapter = gw.engine.requests[-1].adapter
        assert adapter is not None
        versions.add(adapter.version)
    return versions


async def test_promoting_the_shadow_version_ends_the_split_that_shadows_it(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client = fake_gateway.client
    r = await register(client, "pirate", new_adapter(fake_kit, seed=41), activate=False)
    assert r.status_code == 201, r.text
    split = {"weights": {"v1": 100}, "shadow": {"version": "v2", "percent": 100}}
    put = await client.put("/admin/adapters/pirate/split", json=split, headers=ADMIN)
    assert put.status_code == 200, put.text
    r = await promote(client, "v2", "v1")
    assert r.status_code == 200, r.text
    assert r.json()["active_version"] == "v2"
    assert r.json()["split"] is None, r.json()
    assert await served_versions(fake_gateway, 8) == {"v2"}
    audit = (await client.get("/admin/audit", headers=ADMIN)).json()["data"][0]
    assert audit["action"] == "adapter.promote"
    assert audit["detail"]["split_ended"] == {"v1": 100}


async def test_an_unknown_candidate_is_a_404_naming_version(fake_gateway: FakeGateway) -> None:
    r = await promote(fake_gateway.client, "v9", "v1")
    assert r.status_code == 404, r.text
    assert r.json()["error"]["param"] == "version", r.json()
    bad = await promote(fake_gateway.client, "../v1", "v1")
    assert bad.status_code == 400, bad.text
    assert bad.json()["error"]["param"] == "version", bad.json()


async def test_gate_figures_that_did_not_pass_promote_nothing(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    """The audit's ``adapter.promote`` entries always record a passed gate."""
    client = fake_gateway.client
    r = await register(client, "pirate", new_adapter(fake_kit, seed=42), activate=False)
    assert r.status_code == 201, r.text
    failed = {**PASSING_GATE, "low": -0.2, "high": 0.1, "margin": 0.05}
    empty = {**PASSING_GATE, "items": 0}
    upside_down = {**PASSING_GATE, "low": 0.5, "high": 0.1}
    for gate in (failed, empty, upside_down):
        body = {"version": "v2", "stable": "v1", "gate": gate}
        r = await client.post("/admin/adapters/pirate/promote", json=body, headers=ADMIN)
        assert r.status_code == 400, (gate, r.text)
        assert r.json()["error"]["param"] == "gate", r.json()
    info = (await client.get("/admin/adapters/pirate", headers=ADMIN)).json()
    assert info["active_version"] == "v1"
