"""A gateway with tenants, keys, aliases and policies on a fake engine, in-process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from gateway.settings.keys import generate_key
from gateway.state import GatewayState
from tests.conftest import FakeKit
from tests.support.fakes import FakeEngine

GLOBEX_POLICY = "GLOBEX-POLICY-7f3a: answer as the Globex assistant for {tenant}."
ALIAS_POLICY = "ACME-SUPPORT-POLICY-91c2: you are Acme support."
KEYS = {name: generate_key() for name in ("acme", "acme2", "globex", "admin")}


def config(kit: FakeKit, data_dir: Path, **tenant_overrides: Any) -> dict[str, Any]:
    tenants: dict[str, Any] = {
        "acme": {
            "keys": [
                {
                    "id": KEYS["acme"].key_id,
                    "hash": KEYS["acme"].hash,
                    "rate_limit": {"requests_per_minute": 3},
                },
                {"id": KEYS["acme2"].key_id, "hash": KEYS["acme2"].hash},
            ],
            "models": ["tiny-base", "pirate"],
            "aliases": {
                "support-bot": {
                    "model": "pirate",
                    "policy": {"system_prompt": ALIAS_POLICY, "client_system": "drop"},
                }
            },
        },
        "globex": {
            "keys": [{"id": KEYS["globex"].key_id, "hash": KEYS["globex"].hash}],
            "models": ["robot"],
            "policy": {
                "system_prompt": GLOBEX_POLICY,
                "client_system": "merge",
                "max_tokens": 5,
                "temperature": {"max": 0.5},
                "stop": ["###"],
            },
            "max_in_flight": 1,
        },
    }
    tenants.update(tenant_overrides)
    return {
        "model": {"path": str(kit.base), "name": "tiny-base"},
        "adapters": [{"name": n, "path": str(p)} for n, p in kit.adapters.items()],
        "registry": {"data_dir": str(data_dir), "allowed_roots": [str(kit.adapter_root)]},
        "admin": {"keys": [{"id": KEYS["admin"].key_id, "hash": KEYS["admin"].hash}]},
        "tenants": tenants,
    }


@dataclass
class Tenanted:
    client: httpx.AsyncClient
    engine: FakeEngine
    state: GatewayState
    config_path: Path

    async def chat(self, who: str | None, **body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {KEYS[who].key}"} if who else {}
        payload = {"messages": [{"role": "user", "content": "hello"}], **body}
        return await self.client.post("/v1/chat/completions", json=payload, headers=headers)


async def tenanted_gateway(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[Tenanted]:
    """The gateway of ``config`` on a fake engine, started and stopped around the caller
    (a test module's ``gw`` fixture iterates it)."""
    path = tmp_path / "loragate.yaml"
    path.write_text(yaml.safe_dump(config(fake_kit, tmp_path / "data")))
    engine = FakeEngine()
    app = create_app(
        Settings.load(path), engine_factory=lambda _: engine, renderer=renderer, config_path=path
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Tenanted(client, engine, app.state.gateway, path)


def bearer(who: str | None) -> dict[str, str]:
    if who is None:
        return {}
    if who == "bad":
        return {"Authorization": f"Bearer lg-{KEYS['acme'].key_id}-{'x' * 43}"}
    return {"Authorization": f"Bearer {KEYS[who].key}"}
