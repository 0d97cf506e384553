"""Changes to which adapter version serves are audited like a traffic split's: retiring
a version (and the split that retirement ends) and activating one each write an entry
to ``GET /admin/audit``. Fake engine, whole gateway over ASGI."""

from __future__ import annotations

from typing import Any

from tests.conftest import FakeGateway, FakeKit
from tests.support.admin_requests import ADMIN, new_adapter, register


async def newest(gw: FakeGateway) -> dict[str, Any]:
    r = await gw.client.get("/admin/audit", headers=ADMIN)
    assert r.status_code == 200, r.text
    entry: dict[str, Any] = r.json()["data"][0]
    return entry


async def test_retiring_a_split_version_and_activating_are_audited(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client = fake_gateway.client
    for seed in (71, 72):
        r = await register(client, "pirate", new_adapter(fake_kit, seed=seed), activate=False)
        assert r.status_code == 201, r.text
    split = {"weights": {"v1": 50, "v2": 50}}
    assert (await client.put("/admin/adapters/pirate/split", json=split, headers=ADMIN)).is_success

    r = await client.delete("/admin/adapters/pirate", params={"version": "v2"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    entry = await newest(fake_gateway)
    assert (entry["action"], entry["target"], entry["actor"]) == (
        "adapter.retire",
        "pirate",
        "api_key",
    )
    assert entry["detail"] == {"retired": ["pirate@v2"], "split_ended": {"v1": 50, "v2": 50}}

    r = await client.post("/admin/adapters/pirate/activate", json={"version": "v3"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    entry = await newest(fake_gateway)
    assert (entry["action"], entry["target"]) == ("adapter.activate", "pirate")
    assert entry["detail"] == {"version": "v3", "previous": "v1"}

    r = await client.delete("/admin/adapters/pirate", params={"version": "v1"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    entry = await newest(fake_gateway)
    assert entry["detail"] == {"retired": ["pirate@v1"], "split_ended": None}
