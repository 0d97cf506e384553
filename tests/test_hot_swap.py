"""Hot swap, retire-after-drain and restart, with a fake engine (fast, deterministic)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from adapters.base_model import BaseModelSpec
from adapters.registry import AdapterRegistry
from gateway.adapter_runtime.inflight import InFlightTracker
from gateway.errors import ModelNotFoundError
from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.admin_requests import ADMIN, chat, new_adapter, register
from tests.support.fakes import FakeEngine
from tests.support.sse import parse_sse


async def _until(condition: Callable[[], bool]) -> None:
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the condition never held")


def _stream_text(response: httpx.Response) -> str:
    events = parse_sse(response.text)
    assert events[-1] == "[DONE]"
    assert all("error" not in e for e in events[:-1]), events
    return "".join(
        e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e["choices"]
    )


async def _two_versions(gateway: FakeGateway, kit: FakeKit, name: str) -> tuple[int, int]:
    await register(gateway.client, name, new_adapter(kit, seed=1))
    await register(gateway.client, name, new_adapter(kit, seed=2), activate=False)
    versions = (await gateway.client.get(f"/admin/adapters/{name}", headers=ADMIN)).json()
    return versions["versions"][0]["lora_id"], versions["versions"][1]["lora_id"]


async def test_a_running_request_finishes_on_the_version_it_started_with(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client, engine = fake_gateway.client, fake_gateway.engine
    v1, v2 = await _two_versions(fake_gateway, fake_kit, "swap")
    engine.token_delay = 0.02
    tracker = fake_gateway.app.state.gateway.lifecycle.tracker
    old = asyncio.create_task(chat(client, "swap", max_tokens=8, stream=True))
    await _until(lambda: tracker.running(v1) == 1)

    r = await client.post("/admin/adapters/swap/activate", json={"version": "v2"}, headers=ADMIN)
    assert r.status_code == 200
    assert tracker.running(v1) == 1, "the old request is still running"
    new = await chat(client, "swap", max_tokens=8, stream=True)
    finished = await old

    assert _stream_text(finished) == " ".join(f"swap0w{i}" for i in range(8)) + " "
    assert _stream_text(new).startswith("swap0w0")
    first, second = (r.adapter for r in engine.requests[-2:])
    assert first is not None and (first.version, first.lora_id) == ("v1", v1)
    assert second is not None and (second.version, second.lora_id) == ("v2", v2)
    assert v1 not in engine.removed  # activation never unloads


async def test_retired_version_is_unloaded_only_after_its_last_request(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    client, engine = fake_gateway.client, fake_gateway.engine
    v1, _ = await _two_versions(fake_gateway, fake_kit, "gone")
    lifecycle = fake_gateway.app.state.gateway.lifecycle
    engine.token_delay = 0.02
    running = [
        asyncio.create_task(chat(client, "gone@v1", max_tokens=6, stream=stream))
        for stream in (True, False)
    ]
    await _until(lambda: lifecycle.tracker.running(v1) == 2)

    r = await client.delete("/admin/adapters/gone", params={"version": "v1"}, headers=ADMIN)
    assert r.json()["retired"] == ["gone@v1"]
    refused = await chat(client, "gone@v1")
    assert refused.status_code == 404 and refused.json()["error"]["code"] == "model_not_found"
    assert (await chat(client, "gone")).status_code == 404  # v1 was the active version
    listing = (await client.get("/admin/adapters/gone", headers=ADMIN)).json()
    assert listing["versions"][0]["status"] == "retiring"
    assert listing["versions"][0]["in_flight"] == 2
    assert v1 not in engine.removed

    streamed, plain = await asyncio.gather(*running)
    assert _stream_text(streamed).startswith("gone0w0")
    assert plain.status_code == 200
    await lifecycle.wait_for_drains()
    assert engine.removed == [v1]
    assert lifecycle.tracker.is_closed(v1)
    data_dir = fake_gateway.settings.registry.data_dir
    assert not (data_dir / "adapters" / "gone" / "v1").exists()
    assert (data_dir / "adapters" / "gone" / "v2").is_dir()
    versions = (await client.get("/admin/adapters/gone", headers=ADMIN)).json()["versions"]
    assert [v["version"] for v in versions] == ["v2"]


async def test_a_client_that_leaves_releases_its_adapter(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    await register(fake_gateway.client, "brief", new_adapter(fake_kit, seed=3))
    lifecycle = fake_gateway.app.state.gateway.lifecycle
    lora_id = lifecycle.registry.resolve("brief").lora_int_id
    fake_gateway.engine.token_delay = 0.05
    task = asyncio.create_task(chat(fake_gateway.client, "brief", max_tokens=8))
    await _until(lambda: lifecycle.tracker.running(lora_id) == 1)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await _until(lambda: lifecycle.tracker.running(lora_id) == 0)
    await lifecycle.retire("brief")
    await asyncio.wait_for(lifecycle.wait_for_drains(), 2)
    assert fake_gateway.engine.removed == [lora_id]


async def test_restart_brings_back_versions_active_choices_and_pins(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    settings = fake_settings(fake_kit, tmp_path / "registry")
    async with run_fake_gateway(settings, renderer) as first:
        await _two_versions(first, fake_kit, "tone")
        await first.client.post(
            "/admin/adapters/tone/activate", json={"version": "v2"}, headers=ADMIN
        )
        await first.client.post("/admin/adapters/robot/pin", headers=ADMIN)
        before = (await first.client.get("/admin/adapters", headers=ADMIN)).json()

    engine = FakeEngine()
    async with run_fake_gateway(settings, renderer, engine) as second:
        after = (await second.client.get("/admin/adapters", headers=ADMIN)).json()
        strip = ("residency", "requests_total", "in_flight")

        def stable(listing: dict) -> list:
            return [
                (
                    a["name"],
                    a["active_version"],
                    [{k: v for k, v in x.items() if k not in strip} for x in a["versions"]],
                )
                for a in listing["data"]
            ]

        assert stable(after) == stable(before)  # config adapters were not imported again
        assert engine.pinned == [2]  # robot@v1, pinned again in the new engine
        await chat(second.client, "tone")
        adapter = engine.requests[-1].adapter
        assert adapter is not None and adapter.version == "v2"


async def test_changed_config_weights_become_a_new_active_version(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    settings = fake_settings(fake_kit, tmp_path / "registry")
    async with run_fake_gateway(settings, renderer):
        pass
    changed = new_adapter(fake_kit, seed=99)
    moved = settings.model_copy(
        update={"adapters": [settings.adapters[0].model_copy(update={"path": changed})]}
    )
    async with run_fake_gateway(moved, renderer) as gateway:
        pirate = (await gateway.client.get("/admin/adapters/pirate", headers=ADMIN)).json()
        assert pirate["active_version"] == "v2"
        assert [v["lora_id"] for v in pirate["versions"]] == [1, 3]


async def test_versions_left_retiring_are_removed_at_start_up(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    settings = fake_settings(fake_kit, tmp_path / "registry")
    async with run_fake_gateway(settings, renderer):
        pass
    base = BaseModelSpec.from_directory(fake_kit.base, name="tiny-base")
    with AdapterRegistry.open(settings.registry.data_dir, base) as registry:
        registry.retire("robot")  # as if the process died while robot was draining
    async with run_fake_gateway(settings, renderer) as gateway:
        listing = (await gateway.client.get("/admin/adapters", headers=ADMIN)).json()
        assert [a["name"] for a in listing["data"]] == ["pirate", "robot"]
        robot = listing["data"][1]["versions"]
        # The config still names robot: it is imported again, as a new version and id.
        assert [(v["version"], v["lora_id"]) for v in robot] == [("v2", 3)]


async def test_a_second_gateway_on_the_same_data_dir_fails_fast(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    from adapters.errors import RegistryLockedError

    settings = fake_settings(fake_kit, tmp_path / "registry")
    started: list[FakeEngine] = []

    async with run_fake_gateway(settings, renderer):
        with pytest.raises(RegistryLockedError):
            async with run_fake_gateway(settings, renderer, FakeEngine()) as other:
                started.append(other.engine)
    assert started == []


async def test_tracker_drain_waits_then_closes() -> None:
    tracker = InFlightTracker()
    tracker.enter(7, "x@v1")
    tracker.enter(7, "x@v1")
    drained = asyncio.create_task(tracker.drain(7))
    await asyncio.sleep(0)
    tracker.exit(7)
    await asyncio.sleep(0)
    assert not drained.done()
    tracker.exit(7)
    await asyncio.wait_for(drained, 1)
    assert tracker.served(7) == 2 and tracker.running(7) == 0
    with pytest.raises(ModelNotFoundError):
        tracker.enter(7, "x@v1")
    tracker.enter(8, "y@v1")  # other ids are unaffected
    assert tracker.running(8) == 1


async def test_tracker_drain_rechecks_after_waking() -> None:
    """A request entering between the last exit and the drain waking up is waited for."""
    tracker = InFlightTracker()
    tracker.enter(1, "a@v1")
    drained = asyncio.create_task(tracker.drain(1))
    await asyncio.sleep(0)
    tracker.exit(1)
    tracker.enter(1, "a@v1")  # before the drain task runs again
    await asyncio.sleep(0.01)
    assert not drained.done() and not tracker.is_closed(1)
    tracker.exit(1)
    await asyncio.wait_for(drained, 1)
    assert tracker.is_closed(1)
