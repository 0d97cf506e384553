"""Registry adapters on the real vLLM engine: hot swap under streaming load, churn, retire."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.engine_fixtures import LIVE_ADMIN_KEY, LiveGateway, live_adapter_root
from tests.support.modelkit import write_random_adapter

pytestmark = pytest.mark.engine

ADMIN = {"Authorization": f"Bearer {LIVE_ADMIN_KEY}"}
PROMPT = [{"role": "user", "content": "Tell me about the sea."}]
Kit = tuple[Path, dict[str, Path]]


def body(model: str, **fields: Any) -> dict[str, Any]:
    return {"model": model, "messages": PROMPT, "temperature": 0, "max_tokens": 12, **fields}


@dataclass
class Stream:
    sent: float
    first_token: float | None
    ended: float
    text: str
    status: int
    clean: bool
    """Ended with [DONE] and carried no error event."""


async def stream(
    client: httpx.AsyncClient, model: str, started: asyncio.Event | None = None
) -> Stream:
    sent, first, text, clean = time.monotonic(), None, "", False
    async with client.stream(
        "POST", "/v1/chat/completions", json=body(model, max_tokens=40, stream=True)
    ) as r:
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                clean = True
                break
            chunk = json.loads(line[6:])
            if "error" in chunk:
                break
            delta = chunk["choices"][0]["delta"].get("content") if chunk["choices"] else None
            if delta:
                if first is None:
                    first = time.monotonic()
                    if started is not None:
                        started.set()
                text += delta
    return Stream(sent, first, time.monotonic(), text, r.status_code, clean)


async def text_of(client: httpx.AsyncClient, model: str) -> str:
    r = await client.post("/v1/chat/completions", json=body(model))
    assert r.status_code == 200, r.text
    return str(r.json()["choices"][0]["message"]["content"])


@asynccontextmanager
async def registered(
    client: httpx.AsyncClient, kit: Kit, adapters: dict[str, list[int]]
) -> AsyncIterator[None]:
    """Register ``{name: [seed per version]}`` (first version active), retire them after."""
    root = live_adapter_root(kit)
    try:
        for name, seeds in adapters.items():
            for i, seed in enumerate(seeds, start=1):
                folder = write_random_adapter(kit[0], root / f"{name}-v{i}", seed=seed)
                r = await client.post(
                    "/admin/adapters",
                    json={"name": name, "path": str(folder), "activate": i == 1},
                    headers=ADMIN,
                )
                assert r.status_code == 201, r.text
        yield
    finally:
        for name in adapters:
            await client.delete(f"/admin/adapters/{name}", headers=ADMIN)


async def wait_removed(client: httpx.AsyncClient, name: str) -> None:
    for _ in range(200):
        if (await client.get(f"/admin/adapters/{name}", headers=ADMIN)).status_code == 404:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} was never removed")


async def test_hot_swap_under_streaming_load(live_gateway: LiveGateway, tiny_kit: Kit) -> None:
    """Streams on ``swap`` while v2 is activated: none fails, each is exactly v1 or v2 output,
    and which one is fixed by when it started (before the switch: v1, after it: v2)."""
    async with (
        httpx.AsyncClient(base_url=live_gateway.base_url, timeout=120) as client,
        registered(client, tiny_kit, {"swap": [201, 202]}),
    ):
        solo = {v: (await stream(client, f"swap@{v}")).text for v in ("v1", "v2")}
        assert solo["v1"] != solo["v2"], "the two versions must answer differently"
        ids = {
            v["version"]: v["lora_id"]
            for v in (await client.get("/admin/adapters/swap", headers=ADMIN)).json()["versions"]
        }

        first_token = asyncio.Event()
        before = [asyncio.create_task(stream(client, "swap", first_token)) for _ in range(6)]
        await first_token.wait()
        switch_sent = time.monotonic()
        r = await client.post(
            "/admin/adapters/swap/activate", json={"version": "v2"}, headers=ADMIN
        )
        switch_done = time.monotonic()
        assert r.status_code == 200 and r.json()["active_version"] == "v2"
        after = [asyncio.create_task(stream(client, "swap")) for _ in range(6)]
        results = await asyncio.gather(*before, *after)

        assert all(s.status == 200 and s.clean for s in results), "0 failed requests"
        version_of = {solo["v1"]: "v1", solo["v2"]: "v2"}
        versions = [version_of.get(s.text) for s in results]
        assert None not in versions, "every response is exactly one version's solo output"
        for s, version in zip(results, versions, strict=True):
            if s.first_token is not None and s.first_token < switch_sent:
                assert version == "v1"
            if s.sent > switch_done:
                assert version == "v2"
        across = [
            s for s, v in zip(results, versions, strict=True) if v == "v1" and s.ended > switch_done
        ]
        assert across, "some v1 streams were still running after the switch"

        # Retire both versions: unloaded from the engine once their requests are done.
        await client.delete("/admin/adapters/swap", headers=ADMIN)
        assert (await client.post("/v1/chat/completions", json=body("swap"))).status_code == 404
        await wait_removed(client, "swap")
        loaded = live_gateway.run(live_gateway.state.engine.residency()).loaded
        assert not loaded & set(ids.values())


async def test_registry_adapters_stay_isolated_under_churn(
    live_gateway: LiveGateway, tiny_kit: Kit
) -> None:
    """Five registry adapters plus a second version (> max_loras=2, > max_cpu_loras=3) and the
    base, concurrently, twice over: each output equals its solo output at temperature 0."""
    adapters = {f"churn{i}": [300 + i] for i in range(1, 5)} | {"churn5": [305, 306]}
    async with (
        httpx.AsyncClient(base_url=live_gateway.base_url, timeout=120) as client,
        registered(client, tiny_kit, adapters),
    ):
        models = ["tiny-llama", *adapters, "churn5@v2"]
        solo = {m: await text_of(client, m) for m in models}
        assert len(set(solo.values())) == len(models), "adapters must answer differently"
        for _ in range(2):
            order = models + models[::-1]
            mixed = await asyncio.gather(*(text_of(client, m) for m in order))
            for model, text in zip(order, mixed, strict=True):
                assert text == solo[model], f"{model} changed inside a mixed batch"

        listing = (await client.get("/admin/adapters", headers=ADMIN)).json()
        assert listing["slots_known"] is True
        churn = {a["name"]: a for a in listing["data"] if a["name"].startswith("churn")}
        assert churn["churn1"]["requests_total"] == 1 + 2 * 2
        assert churn["churn5"]["requests_total"] == 2 * (1 + 2 * 2)
        every = [v for a in listing["data"] for v in a["versions"]]
        in_slot = [v["ref"] for v in every if v["residency"] == "gpu_slot"]
        loaded = [v["ref"] for v in every if v["residency"] != "disk"]
        assert 1 <= len(in_slot) <= 2 and len(loaded) <= 3, (in_slot, loaded)
