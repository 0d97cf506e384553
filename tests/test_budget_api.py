"""Budgets over HTTP on one gateway (ASGI, fake engine, in-memory counters): key and
tenant budgets together, cached prompt tokens at their price, a stream refused before
its first byte, and a reload that changes a budget."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from gateway.settings.keys import generate_key
from tests.conftest import FakeKit
from tests.support.fakes import FakeEngine

pytestmark = pytest.mark.asyncio

KEYS = {name: generate_key() for name in ("capped", "free", "admin")}
PRICES = {"tiny-base": {"input": 4.0, "cached_input": 1.0, "output": 8.0}}


def config(kit: FakeKit, data_dir: Path, tenant_budget: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "model": {"path": str(kit.base), "name": "tiny-base"},
        "registry": {"data_dir": str(data_dir)},
        "admin": {"keys": [{"id": KEYS["admin"].key_id, "hash": KEYS["admin"].hash}]},
        "tenants": {
            "acme": {
                "keys": [
                    {
                        "id": KEYS["capped"].key_id,
                        "hash": KEYS["capped"].hash,
                        "budget": {"period": "day", "max_tokens": 100},
                    },
                    {"id": KEYS["free"].key_id, "hash": KEYS["free"].hash},
                ],
                "models": ["tiny-base"],
                "budget": tenant_budget,
            }
        },
        "pricing": {"models": PRICES},
    }


@dataclass
class Gateway:
    client: httpx.AsyncClient
    engine: FakeEngine
    path: Path
    kit: FakeKit

    async def chat(self, who: str, **body: Any) -> httpx.Response:
        payload = {
            "model": "tiny-base",
            "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 8,
            **body,
        }
        headers = {"Authorization": f"Bearer {KEYS[who].key}"}
        return await self.client.post("/v1/chat/completions", json=payload, headers=headers)

    async def admin(self, method: str, route: str) -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEYS['admin'].key}"}
        return await self.client.request(method, route, headers=headers)


@pytest.fixture
async def gw(fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer) -> AsyncIterator[Gateway]:
    path = tmp_path / "loragate.yaml"
    path.write_text(yaml.safe_dump(config(fake_kit, tmp_path / "data", None)))
    engine = FakeEngine()
    app = create_app(
        Settings.load(path), engine_factory=lambda _: engine, renderer=renderer, config_path=path
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Gateway(client, engine, path, fake_kit)


async def spend_until_refused(gw: Gateway, who: str) -> tuple[int, httpx.Response]:
    served = 0
    for _ in range(50):
        r = await gw.chat(who)
        if r.status_code != 200:
            return served, r
        served += r.json()["usage"]["total_tokens"]
    raise AssertionError("never refused")


async def test_a_keys_budget_refuses_it_while_its_tenant_serves_other_keys(gw: Gateway) -> None:
    served, refused = await spend_until_refused(gw, "capped")
    assert 0 < served <= 100
    assert refused.status_code == 429
    assert refused.json() == {
        "error": {
            "message": refused.json()["error"]["message"],
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    assert "key's budget for today (UTC)" in refused.json()["error"]["message"]
    assert "retry-after" not in refused.headers
    assert (await gw.chat("free")).status_code == 200  # no budget on this key
    engine_saw = len(gw.engine.requests)
    streamed = await gw.chat("capped", stream=True)  # refused before the stream opens
    assert streamed.status_code == 429
    assert streamed.headers["content-type"].startswith("application/json")
    assert len(gw.engine.requests) == engine_saw
    usage = (await gw.admin("GET", "/admin/usage")).json()
    [status] = usage["budgets"]
    assert status["key_id"] == KEYS["capped"].key_id
    assert (status["spent_tokens"], status["reserved_tokens"]) == (served, 0)


async def test_cached_prompt_tokens_cost_the_cached_price(gw: Gateway) -> None:
    gw.engine.cached_tokens = 4
    r = await gw.chat("free")
    usage = r.json()["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == 4
    expected = (
        (usage["prompt_tokens"] - 4) * 4.0 + 4 * 1.0 + usage["completion_tokens"] * 8.0
    ) / 1e6
    [row] = (await gw.admin("GET", "/admin/usage")).json()["data"]
    assert row["cost"] == pytest.approx(expected)
    assert row["engine_seconds"] > 0
    text = (await gw.admin("GET", "/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("loragate_cost_total{"))
    assert 'tenant="acme"' in line and float(line.rsplit(" ", 1)[1]) == pytest.approx(expected)


async def test_a_reload_applies_a_new_tenant_budget_to_what_is_spent(gw: Gateway) -> None:
    first = await gw.chat("free")
    spent = first.json()["usage"]["total_tokens"]
    cfg = config(gw.kit, gw.path.parent / "data", {"period": "month", "max_tokens": spent})
    gw.path.write_text(yaml.safe_dump(cfg))
    reload = await gw.admin("POST", "/admin/config/reload")
    assert reload.status_code == 200 and "pricing" in reload.json()["applied"]
    refused = await gw.chat("free")  # this month's spend already fills the new budget
    assert refused.status_code == 429
    assert "tenant's budget for this month (UTC)" in refused.json()["error"]["message"]
    assert refused.json()["error"]["code"] == "insufficient_quota"
