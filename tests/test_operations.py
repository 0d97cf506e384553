"""Operations (fake engine): liveness vs readiness, what a reload reports, and the
Prometheus exposition with the process-wide registry's series next to loragate's."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.parser import text_string_to_metric_families

from gateway import app as app_module
from gateway.app import create_app
from gateway.config_reload import load_settings, reload_tenancy
from gateway.metrics import GatewayMetrics
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.tenancy.usage import UsageUnavailableError
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.fakes import FakeEngine

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


# ------------------------------------------------------------------ liveness


async def test_health_fails_once_the_engine_has_died(fake_gateway: FakeGateway) -> None:
    client = fake_gateway.client
    assert (await client.get("/health")).json() == {"status": "ok"}
    fake_gateway.engine.healthy = False
    for path in ("/health", "/ready"):
        r = await client.get(path)
        assert r.status_code == 503, path
        assert r.json()["error"]["type"] == "service_unavailable"
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_health_of_a_remote_pool_does_not_follow_its_replicas(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    """No healthy replica is /ready's 503; restarting the gateway would not cure it."""
    settings = fake_settings(
        fake_kit,
        tmp_path / "registry",
        engine={"kind": "remote", "replicas": ["http://127.0.0.1:9"]},
    )
    async with run_fake_gateway(settings, renderer) as gateway:
        gateway.engine.healthy = False
        assert (await gateway.client.get("/health")).status_code == 200
        assert (await gateway.client.get("/ready")).status_code == 503


# ------------------------------------------------------------------ reload


def base_config(kit: FakeKit, data_dir: Path) -> dict[str, Any]:
    return {
        "model": {"path": str(kit.base), "name": "tiny-base"},
        "adapters": [{"name": n, "path": str(p)} for n, p in kit.adapters.items()],
        "registry": {"data_dir": str(data_dir), "allowed_roots": [str(kit.adapter_root)]},
        "admin": {"api_key": ADMIN_KEY},
        "tenants": {"acme": {"models": ["*"]}},
    }


@asynccontextmanager
async def served(
    path: Path, renderer: PromptRenderer, overrides: Mapping[str, Any] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    engine = FakeEngine()
    app = create_app(
        load_settings(path, overrides),
        engine_factory=lambda _: engine,
        renderer=renderer,
        config_path=path,
        config_overrides=overrides,
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield client


async def reload(client: httpx.AsyncClient) -> dict[str, Any]:
    r = await client.post("/admin/config/reload", headers=ADMIN)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_reload_says_what_it_applied_and_what_needs_a_restart(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "loragate.yaml"
    data = base_config(fake_kit, tmp_path / "data")
    path.write_text(yaml.safe_dump(data))
    async with served(path, renderer) as client:
        assert await reload(client) == {
            "status": "reloaded",
            "tenants": ["acme"],
            "applied": ["admin", "prompts", "tenants", "pricing"],
            "restart_required": [],
        }
        changed = {
            **data,
            "engine": {"max_loras": 2},
            "adapters": data["adapters"][:1],
            "limits": {"max_n": 2},
            "retrieval": {"top_k": 3},
            "server": {"port": 8123},
            "tenants": {"acme": {"models": ["*"]}, "globex": {"models": ["pirate"]}},
        }
        path.write_text(yaml.safe_dump(changed))
        caplog.set_level(logging.INFO, logger="gateway.config_reload")
        body = await reload(client)
        assert body["tenants"] == ["acme", "globex"]  # applied
        assert body["applied"] == ["admin", "prompts", "tenants", "pricing"]
        assert body["restart_required"] == ["engine", "adapters", "server", "limits", "retrieval"]
        warning = next(r for r in caplog.records if r.levelno == logging.WARNING)
        assert warning.getMessage() == (
            "config reload: changed but not applied until a restart: "
            "engine, adapters, server, limits, retrieval"
        )


async def test_sighup_logs_the_same_report(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "loragate.yaml"
    data = base_config(fake_kit, tmp_path / "data")
    path.write_text(yaml.safe_dump(data))
    async with served(path, renderer):
        path.write_text(yaml.safe_dump({**data, "limits": {"max_messages": 8}}))
        caplog.set_level(logging.INFO, logger="gateway.config_reload")
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(200):
            await asyncio.sleep(0.01)
            if any(r.levelno == logging.WARNING for r in caplog.records):
                break
    messages = [r.getMessage() for r in caplog.records]
    assert "config reloaded: applied admin, prompts, tenants, pricing (1 tenant(s))" in messages
    assert "config reload: changed but not applied until a restart: limits" in messages


async def test_reload_compares_with_the_command_line_flags_applied(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    """Started as ``loragate serve --config FILE --port 8123 --max-loras 2 --lora ...``: the
    unchanged file differs from the running settings only where the flags apply, which is
    no change at all."""
    path = tmp_path / "loragate.yaml"
    path.write_text(yaml.safe_dump(base_config(fake_kit, tmp_path / "data")))
    extra = fake_kit.adapters["pirate"]
    overrides = {
        "server": {"port": 8123},
        "engine": {"max_loras": 2},
        "adapters": [{"name": "extra", "path": str(extra)}],
    }
    async with served(path, renderer, overrides) as client:
        assert (await reload(client))["restart_required"] == []


async def test_reload_without_a_config_file_is_refused(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.post("/admin/config/reload", headers=ADMIN)
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_config_file"


# ------------------------------------------------------------------ /metrics


def test_render_adds_the_process_registry_without_duplicate_names() -> None:
    engine_side = CollectorRegistry()
    Gauge("vllm:num_requests_running", "Running.", ["model_name"], registry=engine_side).labels(
        "m"
    ).set(3)
    Gauge("loragate_in_flight_requests", "A clash.", registry=engine_side).set(99)
    metrics = GatewayMetrics(CollectorRegistry(), also_render=lambda: engine_side)
    text = metrics.render().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["vllm:num_requests_running"].samples[0].value == 3
    assert "loragate_requests" in families
    assert text.count("# TYPE loragate_in_flight_requests ") == 1
    assert "A clash." not in text
    assert "vllm:" not in GatewayMetrics(CollectorRegistry(), also_render=None).render().decode()


async def test_metrics_route_serves_the_process_registry_too(fake_gateway: FakeGateway) -> None:
    # prometheus_client's process-wide registry (vLLM's vllm:* series live there)
    # always holds its python_info series.
    text = (await fake_gateway.client.get("/metrics", headers=ADMIN)).text
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert "python_info" in names and "loragate_requests_total" in names
    assert len(names) == len(set(names))


def test_two_reloads_at_once_apply_one_whole_file_each(fake_kit: FakeKit, tmp_path: Path) -> None:
    """SIGHUP and the admin call at once: their swaps never interleave, so the tenants and
    the admin key in effect always come from the same file."""
    path = tmp_path / "config.yaml"
    config = base_config(fake_kit, tmp_path / "registry")
    path.write_text(yaml.safe_dump(config))
    events: list[str] = []

    class SlowGatekeeper:
        directory = SimpleNamespace(config=load_settings(path).tenancy())

        def reload(self, tenancy: Any) -> None:
            events.append("enter")
            time.sleep(0.05)  # a second reload arriving now must wait for this one
            self.directory = SimpleNamespace(config=tenancy)
            events.append("exit")

    class Guard:
        def rotate(self, key: Any) -> None:
            events.append("rotate")

    state = SimpleNamespace(
        settings=load_settings(path),
        config_overrides={},
        gatekeeper=SlowGatekeeper(),
        admin_guard=Guard(),
        reload_lock=threading.Lock(),
    )
    threads = [
        threading.Thread(target=reload_tenancy, args=(state, path))  # type: ignore[arg-type]
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert events == ["enter", "exit", "rotate"] * 3


async def test_a_usage_store_that_is_down_does_not_stop_the_refresh(
    fake_gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With the shared usage store down, the periodic task still refreshes adapter
    residency and metric labels, and says so in one line (no traceback every 5 s)."""
    state = fake_gateway.app.state.gateway

    def down() -> int:
        raise UsageUnavailableError("the usage database did not answer")

    monkeypatch.setattr(state.usage, "flush", down)
    state.residency_seen.clear()
    caplog.set_level(logging.WARNING, logger="gateway.app")
    task = asyncio.create_task(app_module.flush_usage_periodically(state, seconds=0.01))
    try:
        for _ in range(200):
            if "cpu_cache" in state.residency_seen:
                break
            await asyncio.sleep(0.01)
    finally:
        task.cancel()
    assert "cpu_cache" in state.residency_seen
    warnings = [r for r in caplog.records if "usage not written yet" in r.getMessage()]
    assert warnings and all(r.exc_info is None for r in warnings)
