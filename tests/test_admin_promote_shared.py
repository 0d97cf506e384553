"""``POST /admin/adapters/{name}/promote`` on two gateways sharing one registry
(PostgreSQL): the check that the compared-against version is still active, the
activation and the end of the candidate's split are one change of the shared document,
so a gateway whose view is stale cannot promote over another gateway's promotion."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.state import GatewayState
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.admin_requests import ADMIN, new_adapter, promote, register
from tests.support.postgres_fixtures import write_url


@asynccontextmanager
async def stale_pair(
    kit: FakeKit, pg_url: str, folder: Path, renderer: PromptRenderer
) -> AsyncIterator[tuple[FakeGateway, FakeGateway]]:
    """Two gateways on one store that look for the other's changes only every 30 s."""
    url_file = await asyncio.to_thread(write_url, folder, pg_url)
    shared = {"kind": "postgres", "url_file": url_file, "refresh_seconds": 30, "timeout": 2}
    async with AsyncExitStack() as stack:
        pair = []
        for _ in range(2):
            settings = fake_settings(kit, folder / "shared-volume", shared_store=shared)
            pair.append(await stack.enter_async_context(run_fake_gateway(settings, renderer)))
        yield pair[0], pair[1]


def state(gw: FakeGateway) -> GatewayState:
    gateway_state = gw.app.state.gateway
    assert isinstance(gateway_state, GatewayState)
    return gateway_state


async def test_a_stale_gateway_cannot_promote_over_anothers_promotion(
    pg_url: str, fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    async with stale_pair(fake_kit, pg_url, tmp_path / "gw", renderer) as (a, b):
        for seed in (51, 52):
            r = await register(a.client, "pirate", new_adapter(fake_kit, seed=seed), activate=False)
            assert r.status_code == 201, r.text
        split = {"weights": {"v1": 90, "v3": 10}}
        r = await a.client.put("/admin/adapters/pirate/split", json=split, headers=ADMIN)
        assert r.status_code == 200, r.text
        assert await asyncio.to_thread(state(b).registry.refresh)  # b sees v2, v3, the split

        first = await promote(a.client, "v2", "v1")
        assert first.status_code == 200, first.text
        # b has not looked since: v1 is still active in its view, the split still there.
        assert state(b).registry.resolve("pirate").version == "v1"
        second = await promote(b.client, "v3", "v1")
        assert second.status_code == 409, second.text
        assert second.json()["error"]["code"] == "stable_changed"
        assert second.json()["error"]["param"] == "stable"

        await asyncio.to_thread(state(a).registry.refresh)
        assert state(a).registry.resolve("pirate").version == "v2"
        assert state(a).registry.split("pirate") == state(b).registry.split("pirate")
        assert state(a).registry.split("pirate") is not None  # v3's split: not promoted
        promotions = [
            e
            for e in (await a.client.get("/admin/audit", headers=ADMIN)).json()["data"]
            if e["action"] == "adapter.promote"
        ]
        assert [e["detail"]["version"] for e in promotions] == ["v2"]
