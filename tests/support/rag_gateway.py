"""A gateway with retrieval on a fake engine (two tenants, two collections), in-process."""

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
from tests.support.embedders import WordHashEmbedder
from tests.support.fakes import FakeEngine

ACME_POLICY = "ACME-POLICY-5e1d: you are the Acme assistant."
SLOT_POLICY = "ACME-BOT-POLICY-77aa: answer only from the sources.\n{sources}\nCite them as [n]."
KEYS = {name: generate_key() for name in ("acme", "globex", "admin")}
QUESTION = "How do I reset the admin password I forgot?"

ROUTER_MANUAL = """# Acme Router Manual

## Installation

Unpack the router, connect the power cable and plug the uplink cable into the WAN port.
The status light turns green after about a minute.

## Resetting the admin password

If you forgot the admin password, hold the recessed reset button on the back for ten
seconds while the router is powered on. The password returns to the factory default
printed on the label under the router.

## Firmware updates

Firmware updates are downloaded from the vendor portal and uploaded on the maintenance page.
"""

GLOBEX_DOC = """# Globex secrets

## Password reset

Globex staff reset their admin password through the Globex intranet portal.
"""


def config(kit: FakeKit, data_dir: Path, **retrieval: Any) -> dict[str, Any]:
    def key(name: str) -> list[dict[str, str]]:
        return [{"id": KEYS[name].key_id, "hash": KEYS[name].hash}]

    return {
        "model": {"path": str(kit.base), "name": "tiny-base"},
        "adapters": [{"name": n, "path": str(p)} for n, p in kit.adapters.items()],
        "registry": {"data_dir": str(data_dir)},
        "admin": {"keys": key("admin")},
        "retrieval": {"top_k": 3, "preload": False, **retrieval},
        "tenants": {
            "acme": {
                "keys": key("acme"),
                "models": ["tiny-base"],
                "collections": ["manuals", "faq"],
                "policy": {"system_prompt": ACME_POLICY, "client_system": "keep"},
                "aliases": {
                    "support-bot": {
                        "model": "pirate",
                        "policy": {
                            "system_prompt": SLOT_POLICY,
                            "rag": {"collections": ["manuals"], "top_k": 2},
                        },
                    }
                },
            },
            "globex": {"keys": key("globex"), "models": ["robot"], "collections": ["globex"]},
        },
    }


@dataclass
class RagGateway:
    client: httpx.AsyncClient
    engine: FakeEngine
    state: GatewayState
    app: Any

    async def chat(self, who: str, **body: Any) -> httpx.Response:
        payload = {"model": "tiny-base", "messages": [{"role": "user", "content": QUESTION}]}
        return await self.client.post(
            "/v1/chat/completions", json={**payload, **body}, headers=bearer(who)
        )

    async def chunk_ids(self, collection: str) -> set[str]:
        store = await self.state.retrieval.provider.get()
        return {c.chunk_id for c in store.snapshot(collection).chunks}


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who].key}"}


async def upload(gw: RagGateway, collection: str, name: str, text: str) -> httpx.Response:
    return await gw.client.post(
        f"/admin/collections/{collection}/documents",
        files={"file": (name, text.encode(), "text/markdown")},
        headers=bearer("admin"),
    )


async def start(
    kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, engine: FakeEngine, **retrieval: Any
) -> AsyncIterator[RagGateway]:
    path = tmp_path / "loragate.yaml"
    path.write_text(yaml.safe_dump(config(kit, tmp_path / "data", **retrieval)))
    app = create_app(
        Settings.load(path),
        engine_factory=lambda _: engine,
        renderer=renderer,
        config_path=path,
        embedder=WordHashEmbedder(),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            gw = RagGateway(client, engine, app.state.gateway, app)
            for collection, name, text in (
                ("manuals", "router.md", ROUTER_MANUAL),
                ("globex", "globex.md", GLOBEX_DOC),
            ):
                r = await upload(gw, collection, name, text)
                assert r.status_code == 200, r.text
            yield gw
