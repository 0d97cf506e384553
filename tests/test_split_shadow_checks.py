"""``PUT /admin/adapters/{name}/split`` refuses a shadow that could never copy a request:
its version already gets every caller (weight 100), so no request is ever shadowed while
the split looks like a running shadow rollout. Fake engine, whole gateway over ASGI."""

from __future__ import annotations

from tests.conftest import FakeGateway, FakeKit
from tests.support.admin_requests import ADMIN, new_adapter, register


async def test_a_shadow_on_the_version_that_gets_every_caller_is_a_400(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client = fake_gateway.client
    r = await register(client, "pirate", new_adapter(fake_kit, seed=61), activate=False)
    assert r.status_code == 201, r.text
    for weights, shadow in [({"v1": 100}, "v1"), ({"v1": 0, "v2": 100}, "v2")]:
        body = {"weights": weights, "shadow": {"version": shadow, "percent": 10}}
        r = await client.put("/admin/adapters/pirate/split", json=body, headers=ADMIN)
        assert r.status_code == 400, (body, r.text)
        error = r.json()["error"]
        assert (error["param"], error["code"]) == ("shadow.version", "invalid_split"), error
    info = (await client.get("/admin/adapters/pirate", headers=ADMIN)).json()
    assert info["split"] is None and info["shadow"] is None
    body = {"weights": {"v1": 90, "v2": 10}, "shadow": {"version": "v2", "percent": 10}}
    r = await client.put("/admin/adapters/pirate/split", json=body, headers=ADMIN)
    assert r.status_code == 200, r.text  # v1's callers are copied to v2
