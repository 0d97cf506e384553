"""A tenant alias's split after an adapter it names was retired: its callers get the
alias's own ``model``, as a version split's callers get the active version, instead of
a 404 for the share of callers whose bucket chose the retired adapter."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import generate_key
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit, fake_settings, run_fake_gateway

KEY = generate_key()
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
async def gw(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[FakeGateway]:
    tenants = {
        "acme": {
            "keys": [{"id": KEY.key_id, "hash": KEY.hash}],
            "models": ["pirate", "robot"],
            "aliases": {"support": {"model": "pirate", "split": {"pirate": 50, "robot": 50}}},
        }
    }
    settings = fake_settings(fake_kit, tmp_path / "registry", tenants=tenants)
    async with run_fake_gateway(settings, renderer) as gateway:
        yield gateway


async def served(gw: FakeGateway, user: str) -> str | None:
    body = {"model": "support", "messages": [{"role": "user", "content": "hi"}], "user": user}
    headers = {"Authorization": f"Bearer {KEY.key}"}
    r = await gw.client.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, (user, r.text)
    assert r.json()["model"] == "support"
    adapter = gw.engine.requests[-1].adapter
    return adapter.name if adapter is not None else None


async def test_callers_of_a_retired_adapter_get_the_aliases_model(gw: FakeGateway) -> None:
    users = [f"user-{i}" for i in range(16)]
    before = {u: await served(gw, u) for u in users}
    assert set(before.values()) == {"pirate", "robot"}
    r = await gw.client.delete("/admin/adapters/robot", headers=ADMIN)
    assert r.status_code == 200, r.text
    after = {u: await served(gw, u) for u in users}
    assert set(after.values()) == {"pirate"}
    assert all(after[u] == "pirate" for u in users if before[u] == "pirate")  # unmoved
