"""Gateways (fake engine, over ASGI) for the tests of ``/admin/tenants``: one config
file tenant with a file key, and a hashed admin key (so the audit log names it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from fastapi import FastAPI

from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from gateway.settings.keys import generate_key
from gateway.state import GatewayState
from tests.conftest import FakeKit
from tests.support.fakes import FakeEngine
from tests.support.postgres_fixtures import write_url

ADMIN_KEY = generate_key()
FILE_KEY = generate_key()
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY.key}"}
MESSAGES = [{"role": "user", "content": "hello"}]


def tenant_config(kit: FakeKit, data_dir: Path, **extra: Any) -> dict[str, Any]:
    """``acme`` in the file (pirate and the base), the prompt library, an admin key."""
    return {
        "model": {"path": str(kit.base), "name": "tiny-base"},
        "adapters": [{"name": n, "path": str(p)} for n, p in kit.adapters.items()],
        "registry": {"data_dir": str(data_dir), "allowed_roots": [str(kit.adapter_root)]},
        "admin": {"keys": [{"id": ADMIN_KEY.key_id, "hash": ADMIN_KEY.hash}]},
        "prompts": {"tone": {"v1": "Be brief, {tenant}."}},
        "tenants": {
            "acme": {
                "keys": [{"id": FILE_KEY.key_id, "hash": FILE_KEY.hash}],
                "models": ["tiny-base", "pirate"],
            }
        },
        **extra,
    }


@dataclass
class Gateway:
    client: httpx.AsyncClient
    engine: FakeEngine
    state: GatewayState
    app: FastAPI
    config_path: Path

    async def chat(self, key: str, model: str = "pirate") -> httpx.Response:
        body = {"model": model, "messages": MESSAGES, "max_tokens": 2}
        headers = {"Authorization": f"Bearer {key}"}
        return await self.client.post("/v1/chat/completions", json=body, headers=headers)

    async def new_key(self, tenant: str, name: str = "ci", **fields: Any) -> dict[str, Any]:
        r = await self.client.post(
            f"/admin/tenants/{tenant}/keys", json={"name": name, **fields}, headers=ADMIN
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    async def audit(self) -> list[dict[str, Any]]:
        r = await self.client.get("/admin/audit", headers=ADMIN)
        assert r.status_code == 200, r.text
        data: list[dict[str, Any]] = r.json()["data"]
        return data


def write_config(folder: Path, config: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "loragate.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@asynccontextmanager
async def started(
    config: dict[str, Any], folder: Path, renderer: PromptRenderer
) -> AsyncIterator[Gateway]:
    path = await asyncio.to_thread(write_config, folder, config)
    engine = FakeEngine()
    app = create_app(
        Settings.load(path), engine_factory=lambda _: engine, renderer=renderer, config_path=path
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Gateway(client, engine, app.state.gateway, app, path)


@asynccontextmanager
async def two_gateways(
    kit: FakeKit, pg_url: str, folder: Path, renderer: PromptRenderer
) -> AsyncIterator[tuple[Gateway, Gateway]]:
    """Two gateways on one PostgreSQL (``shared_store``) and one data volume."""
    url_file = await asyncio.to_thread(write_url, folder / "secret", pg_url)
    shared = {"kind": "postgres", "url_file": str(url_file)}
    async with AsyncExitStack() as stack:
        pair = [
            await stack.enter_async_context(
                started(
                    tenant_config(kit, folder / "volume", shared_store=shared),
                    folder / name,
                    renderer,
                )
            )
            for name in ("a", "b")
        ]
        yield pair[0], pair[1]
