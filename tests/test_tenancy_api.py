"""Tenants end to end over ASGI (fake engine): auth matrix, isolation, policies, limits,
reload, usage, metrics, and what never reaches a log line or an error body."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import generate_key, parse_key
from gateway.tenancy.limit_store import MemoryLimitStore
from gateway.tenancy.rate_limit import RateLimiter
from tests.conftest import FakeKit
from tests.support.sse import parse_sse
from tests.support.tenanted import (
    ALIAS_POLICY,
    GLOBEX_POLICY,
    KEYS,
    Tenanted,
    bearer,
    config,
    tenanted_gateway,
)


@pytest.fixture
async def gw(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[Tenanted]:
    async for gateway in tenanted_gateway(fake_kit, tmp_path, renderer):
        yield gateway


ROUTES: list[tuple[str, str, dict[str, Any] | None]] = [
    (
        "POST",
        "/v1/chat/completions",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    ),
    ("GET", "/v1/models", None),
    ("GET", "/admin/adapters", None),
    ("GET", "/admin/usage", None),
    ("GET", "/metrics", None),
]
MODEL_FOR = {"acme": "pirate", "globex": "robot", "admin": "tiny-base"}
EXPECTED = {  # route -> status for none, bad, acme, globex, admin
    "/v1/chat/completions": (401, 401, 200, 200, 200),
    "/v1/models": (401, 401, 200, 200, 200),
    "/admin/adapters": (401, 401, 403, 403, 200),
    "/admin/usage": (401, 401, 403, 403, 200),
    "/metrics": (401, 401, 403, 403, 200),
}


async def test_auth_matrix(gw: Tenanted) -> None:
    for method, route, body in ROUTES:
        for who, expected in zip(
            (None, "bad", "acme", "globex", "admin"), EXPECTED[route], strict=True
        ):
            payload = dict(body, model=MODEL_FOR[who]) if body and who in MODEL_FOR else body
            if body and who not in MODEL_FOR:
                payload = dict(body, model="pirate")
            r = await gw.client.request(method, route, json=payload, headers=bearer(who))
            assert r.status_code == expected, (route, who, r.text)
            if expected >= 400:
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}


async def test_tenants_cannot_use_list_or_detect_each_other(gw: Tenanted) -> None:
    acme_models = (await gw.client.get("/v1/models", headers=bearer("acme"))).json()["data"]
    assert {m["id"] for m in acme_models} == {"tiny-base", "pirate", "support-bot"}
    globex_models = (await gw.client.get("/v1/models", headers=bearer("globex"))).json()["data"]
    assert {m["id"] for m in globex_models} == {"robot"}
    forbidden = await gw.chat("acme", model="robot")
    unknown = await gw.chat("acme", model="no-such-model")
    alias_of_other = await gw.chat("globex", model="support-bot")
    pinned = await gw.chat("acme", model="robot@v1")
    assert forbidden.status_code == unknown.status_code == alias_of_other.status_code == 404
    assert forbidden.content == unknown.content == alias_of_other.content == pinned.content
    card = await gw.client.get("/v1/models/robot", headers=bearer("acme"))
    missing = await gw.client.get("/v1/models/nothing", headers=bearer("acme"))
    assert card.status_code == 404 and card.content == missing.content
    assert gw.engine.requests == []


async def test_prefix_cache_salt_is_per_tenant_and_client_salt_ignored(gw: Tenanted) -> None:
    await gw.chat("acme", model="pirate", cache_salt="attacker-chosen")
    await gw.chat("acme2", model="pirate")
    await gw.chat("globex", model="robot")
    salts = [r.cache_salt for r in gw.engine.requests]
    assert salts[0] == salts[1] != salts[2]
    assert "attacker-chosen" not in salts and all(salts)


async def test_policies_shape_the_prompt_the_engine_receives(
    gw: Tenanted, renderer: PromptRenderer
) -> None:
    messages = [{"role": "system", "content": "client rule"}, {"role": "user", "content": "hi"}]
    r = await gw.chat("globex", model="robot", messages=messages)
    assert r.status_code == 200, r.text
    policy = GLOBEX_POLICY.replace("{tenant}", "globex")
    merged = [
        {"role": "system", "content": f"{policy}\n\nclient rule"},
        {"role": "user", "content": "hi"},
    ]
    sent = gw.engine.requests[-1]
    assert sent.prompt_token_ids == renderer.chat(merged)
    assert sent.params.max_tokens == 5 and sent.params.temperature == 0.5
    assert "###" in sent.params.stop
    r = await gw.chat("acme", model="support-bot", messages=messages)
    assert r.json()["model"] == "support-bot"
    dropped = [{"role": "system", "content": ALIAS_POLICY}, {"role": "user", "content": "hi"}]
    sent = gw.engine.requests[-1]
    assert sent.prompt_token_ids == renderer.chat(dropped)
    assert sent.adapter is not None and sent.adapter.name == "pirate"
    for body in (r.text, (await gw.chat("globex", model="robot", stream=True)).text):
        assert "GLOBEX-POLICY" not in body and "ACME-SUPPORT-POLICY" not in body


async def test_policy_caps_are_enforced(gw: Tenanted) -> None:
    r = await gw.chat("globex", model="robot", max_tokens=6)
    assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
    r = await gw.chat("globex", model="robot", temperature=0.9)
    assert r.status_code == 400 and r.json()["error"]["param"] == "temperature"
    r = await gw.client.post(
        "/v1/completions", json={"model": "robot", "prompt": "x"}, headers=bearer("globex")
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "policy_requires_chat"
    assert gw.engine.requests == []


async def test_rate_limit_boundary_retry_after_and_refill(gw: Tenanted) -> None:
    now = [0.0]
    gw.state.gatekeeper.limit_store = MemoryLimitStore(RateLimiter(clock=lambda: now[0]))
    for _ in range(3):
        assert (await gw.chat("acme", model="pirate", max_tokens=1)).status_code == 200
    r = await gw.chat("acme", model="pirate", max_tokens=1)
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error"
    assert r.headers["retry-after"] == "20"  # 3 per minute: one every 20 s
    assert len(gw.engine.requests) == 3
    assert (await gw.chat("acme2", model="pirate", max_tokens=1)).status_code == 200  # other key
    now[0] += 20
    assert (await gw.chat("acme", model="pirate", max_tokens=1)).status_code == 200


async def test_in_flight_cap_refuses_a_flood_without_touching_others(gw: Tenanted) -> None:
    gw.engine.token_delay = 0.05
    first = asyncio.create_task(gw.chat("globex", model="robot"))
    while not gw.engine.running:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    second = await gw.chat("globex", model="robot")
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "too_many_concurrent_requests"
    assert (await gw.chat("acme", model="pirate", max_tokens=2)).status_code == 200
    assert (await first).status_code == 200
    assert (await gw.chat("globex", model="robot")).status_code == 200


async def test_reload_applies_valid_refuses_invalid_and_spares_streams(
    gw: Tenanted, fake_kit: FakeKit, tmp_path: Path
) -> None:
    gw.engine.token_delay = 0.02
    async with gw.client.stream(
        "POST",
        "/v1/chat/completions",
        json={"model": "robot", "messages": [{"role": "user", "content": "x"}], "stream": True},
        headers=bearer("globex"),
    ) as stream:
        newcomer = generate_key()
        KEYS["newcomer"] = newcomer
        changed = config(
            fake_kit,
            tmp_path / "data",
            globex={"keys": [], "models": []},
            newcomer={
                "keys": [{"id": newcomer.key_id, "hash": newcomer.hash}],
                "models": ["robot"],
            },
        )
        gw.config_path.write_text(yaml.safe_dump(changed))
        r = await gw.client.post("/admin/config/reload", headers=bearer("admin"))
        assert r.status_code == 200, r.text
        events = parse_sse((await stream.aread()).decode())
    assert events[-1] == "[DONE]" and "error" not in events[-2]
    assert (await gw.chat("newcomer", model="robot")).status_code == 200
    assert (await gw.chat("globex", model="robot")).status_code == 401
    gw.config_path.write_text(yaml.safe_dump({"model": {"path": "x"}, "tenants": {"BAD NAME": {}}}))
    r = await gw.client.post("/admin/config/reload", headers=bearer("admin"))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
    assert (await gw.chat("newcomer", model="robot")).status_code == 200  # old config stays


async def test_usage_and_metrics_after_known_traffic(gw: Tenanted) -> None:
    for _ in range(2):
        await gw.chat("acme", model="support-bot", max_tokens=3)
    await gw.chat("globex", model="robot", max_tokens=4)
    rows = (await gw.client.get("/admin/usage", headers=bearer("admin"))).json()["data"]
    acme = [r for r in rows if r["tenant"] == "acme"]
    assert [(r["model"], r["adapter"], r["requests"], r["completion_tokens"]) for r in acme] == [
        ("support-bot", "pirate", 2, 6)
    ]
    text = (await gw.client.get("/metrics", headers=bearer("admin"))).text
    assert (
        'loragate_requests_total{adapter="pirate",endpoint="chat",model="support-bot",'
        'status_class="2xx",tenant="acme"} 2.0' in text
    )
    assert 'loragate_completion_tokens_total{adapter="robot",tenant="globex"} 4.0' in text


async def test_request_id_is_returned(gw: Tenanted) -> None:
    r = await gw.client.get("/v1/models", headers={**bearer("acme"), "X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await gw.client.get("/v1/models", headers={**bearer("acme"), "X-Request-ID": "bad id!"})
    assert r.headers["x-request-id"] != "bad id!" and len(r.headers["x-request-id"]) == 32


async def test_no_key_material_policy_or_prompt_in_logs_or_errors(
    gw: Tenanted, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_prompt = "my-private-question-5521"
    bodies = []
    for who in (None, "bad", "acme", "globex"):
        r = await gw.client.post(
            "/v1/chat/completions",
            json={"model": "robot", "messages": [{"role": "user", "content": secret_prompt}]},
            headers=bearer(who),
        )
        bodies.append(r.text)
    gw.config_path.write_text("tenants: [not, a, mapping")
    bodies.append((await gw.client.post("/admin/config/reload", headers=bearer("admin"))).text)
    logged = "\n".join(r.getMessage() for r in caplog.records) + "\n".join(bodies)
    for key in KEYS.values():
        parsed = parse_key(key.key)
        assert parsed is not None
        assert parsed[1] not in logged and key.hash not in logged
    assert "GLOBEX-POLICY" not in logged and "ACME-SUPPORT-POLICY" not in logged
    assert secret_prompt not in logged


async def test_sighup_reloads_the_config_file(
    gw: Tenanted, fake_kit: FakeKit, tmp_path: Path
) -> None:
    newcomer = generate_key()
    KEYS["sighup"] = newcomer
    changed = config(
        fake_kit,
        tmp_path / "data",
        sighup={"keys": [{"id": newcomer.key_id, "hash": newcomer.hash}], "models": ["robot"]},
    )
    gw.config_path.write_text(yaml.safe_dump(changed))
    assert (await gw.chat("sighup", model="robot")).status_code == 401
    os.kill(os.getpid(), signal.SIGHUP)
    for _ in range(100):
        await asyncio.sleep(0.01)
        if "sighup" in gw.state.gatekeeper.directory.config.tenants:
            break
    assert (await gw.chat("sighup", model="robot")).status_code == 200
