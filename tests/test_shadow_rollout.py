"""Shadow mode, automatic canary rollback and alias splits on one gateway with a fake
engine whose answers name the adapter version, called with the OpenAI SDK: the caller
gets the stable version's tokens, the shadow log of an opted-in tenant holds both
answers (another tenant's stays empty), a failing or slow shadow is only counted, a
failing canary is rolled back (audited as ``system``), and an alias splits between two
of its tenant's adapters."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import yaml
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry

from adapters.traffic_split import bucket, choose
from gateway.app import create_app
from gateway.cli.admin import run_admin_command
from gateway.cli.main import build_parser
from gateway.engine.interface import GenerationOutput, GenerationRequest
from gateway.errors import EngineFailureError
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from gateway.state import GatewayState
from tests.conftest import FakeKit
from tests.support.admin_requests import new_adapter
from tests.support.fakes import FakeEngine
from tests.support.tenanted import KEYS, config

ADMIN = {"Authorization": f"Bearer {KEYS['admin'].key}"}


class VersionedEngine(FakeEngine):
    """Answers ``<name>-<version>w0 ...``; versions in ``failing`` fail at once."""

    def __init__(self) -> None:
        super().__init__(reply_words=4)
        self.failing: set[str] = set()
        self.slow: dict[str, float] = {}
        """version -> seconds of delay before its first token."""

    def words(self, request: GenerationRequest, index: int) -> list[str]:
        a = request.adapter
        tag = f"{a.name}-{a.version}" if a is not None else "base"
        return [f"{tag}w{i}" for i in range(self.reply_words)]

    async def generate(self, request: GenerationRequest) -> AsyncIterator[GenerationOutput]:
        if request.adapter is not None and request.adapter.version in self.failing:
            self.requests.append(request)
            raise EngineFailureError("canary broke")
        if request.adapter is not None and request.adapter.version in self.slow:
            await asyncio.sleep(self.slow[request.adapter.version])
        async for out in super().generate(request):
            yield out


class Gateway:
    def __init__(
        self, client: httpx.AsyncClient, engine: VersionedEngine, state: GatewayState, app: Any
    ):
        self.app = app
        self.client = client
        self.engine = engine
        self.state = state

    def sdk(self, who: str) -> AsyncOpenAI:
        return AsyncOpenAI(
            base_url="http://gw/v1",
            api_key=KEYS[who].key,
            http_client=cast(Any, self.client),
            max_retries=0,
        )

    async def ask(self, who: str, model: str, user: str = "u1", stream: bool = False) -> str:
        messages: Any = [{"role": "user", "content": "hello"}]
        sdk = self.sdk(who)
        if stream:
            chunks = await sdk.chat.completions.create(
                model=model, messages=messages, max_tokens=8, user=user, stream=True
            )
            return "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        reply = await sdk.chat.completions.create(
            model=model, messages=messages, max_tokens=8, user=user
        )
        assert reply.model == model
        return reply.choices[0].message.content or ""

    async def shadows_done(self) -> None:
        shadows = self.state.pipeline.shadows
        assert shadows is not None
        for _ in range(400):
            if shadows.running == 0:
                return
            await asyncio.sleep(0.005)
        raise AssertionError("shadow requests still running")

    def metric(self, name: str, labels: dict[str, str]) -> float:
        registry: CollectorRegistry = self.state.metrics.registry
        return registry.get_sample_value(name, labels) or 0.0


TENANTS: dict[str, Any] = {
    "acme": {
        "keys": [{"id": KEYS["acme"].key_id, "hash": KEYS["acme"].hash}],
        "models": ["pirate", "robot"],
        "shadow_log": True,
        "aliases": {"support": {"model": "pirate", "split": {"pirate": 50, "robot": 50}}},
    },
    "globex": {
        "keys": [{"id": KEYS["globex"].key_id, "hash": KEYS["globex"].hash}],
        "models": ["pirate"],
    },
}


@asynccontextmanager
async def started(
    kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, **sections: Any
) -> AsyncIterator[Gateway]:
    """Tenants acme (opted in to the shadow log) and globex (not); ``pirate`` has v1
    (active) and v2."""
    data = config(kit, tmp_path / "data")
    data["tenants"] = TENANTS
    data.update(sections)
    path = tmp_path / "loragate.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    engine = VersionedEngine()
    app = create_app(Settings.load(path), engine_factory=lambda _: engine, renderer=renderer)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            gateway = Gateway(client, engine, app.state.gateway, app)
            body = {"name": "pirate", "path": str(new_adapter(kit, seed=41)), "activate": False}
            r = await client.post("/admin/adapters", json=body, headers=ADMIN)
            assert r.status_code == 201, r.text
            yield gateway


@pytest.fixture
async def gw(fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer) -> AsyncIterator[Gateway]:
    async with started(fake_kit, tmp_path, renderer) as gateway:
        yield gateway


async def put_split(gw: Gateway, **body: Any) -> httpx.Response:
    return await gw.client.put("/admin/adapters/pirate/split", json=body, headers=ADMIN)


SHADOW_ALL = {"weights": {"v1": 100}, "shadow": {"version": "v2", "percent": 100}}


async def test_shadow_answers_go_to_the_log_of_opted_in_tenants_only(gw: Gateway) -> None:
    r = await put_split(gw, **SHADOW_ALL)
    assert r.status_code == 200, r.text
    assert r.json()["shadow"] == {"version": "v2", "percent": 100}

    stable = "pirate-v1w0 pirate-v1w1 pirate-v1w2 pirate-v1w3 "
    assert await gw.ask("acme", "pirate") == stable
    assert await gw.ask("acme", "pirate", user="u2", stream=True) == stable
    assert await gw.ask("globex", "pirate") == stable
    await gw.shadows_done()
    shadowed = [r for r in gw.engine.requests if r.request_id.startswith("shadow-")]
    assert [r.adapter.version for r in shadowed if r.adapter] == ["v2", "v2", "v2"]

    page = (await gw.client.get("/admin/adapters/pirate/shadow", headers=ADMIN)).json()
    assert [e["tenant"] for e in page["data"]] == ["acme", "acme"]
    entry = page["data"][0]
    assert entry["stable"]["version"] == "v1" and entry["stable"]["text"] == [stable]
    assert entry["shadow"]["version"] == "v2"
    assert entry["shadow"]["text"] == ["pirate-v2w0 pirate-v2w1 pirate-v2w2 pirate-v2w3 "]
    assert entry["shadow"]["completion_tokens"] == 4 and entry["shadow"]["error"] is None
    globex = await gw.client.get(
        "/admin/adapters/pirate/shadow", params={"tenant": "globex"}, headers=ADMIN
    )
    assert globex.json()["data"] == []
    # Paging: one at a time, by id.
    first = await gw.client.get("/admin/adapters/pirate/shadow", params={"limit": 1}, headers=ADMIN)
    assert first.json()["has_more"] is True
    after = first.json()["last_id"]
    rest = await gw.client.get(
        "/admin/adapters/pirate/shadow", params={"after": after}, headers=ADMIN
    )
    assert [e["id"] for e in rest.json()["data"]] == [page["data"][1]["id"]]
    # Counters for every tenant's shadows; the callers' side is the split's own series.
    ok = {"adapter": "pirate@v2", "outcome": "ok"}
    assert gw.metric("loragate_shadow_requests_total", ok) == 3
    assert gw.metric("loragate_shadow_completion_tokens_total", {"adapter": "pirate@v2"}) == 12
    # The shadow is not charged to the tenant: usage holds the caller's tokens only.
    assert gw.engine.requests[-1].request_id.startswith("shadow-")


async def test_a_failing_shadow_is_counted_and_never_reaches_the_caller(gw: Gateway) -> None:
    gw.engine.failing.add("v2")
    assert (await put_split(gw, **SHADOW_ALL)).status_code == 200
    assert await gw.ask("acme", "pirate") == "pirate-v1w0 pirate-v1w1 pirate-v1w2 pirate-v1w3 "
    await gw.shadows_done()
    error = {"adapter": "pirate@v2", "outcome": "error"}
    assert gw.metric("loragate_shadow_requests_total", error) == 1
    page = (await gw.client.get("/admin/adapters/pirate/shadow", headers=ADMIN)).json()
    assert page["data"][0]["shadow"]["error"] == "canary broke"


async def test_shadows_wait_for_no_one_they_are_skipped_when_the_engine_is_busy(
    gw: Gateway,
) -> None:
    assert (await put_split(gw, **SHADOW_ALL)).status_code == 200
    queue = gw.state.pipeline.queue
    hold = max(0, queue.capacity - queue.in_use - 1)  # leave one slot: not enough room
    async with queue.slot("someone", 1.0, hold):
        await gw.ask("globex", "pirate")
    await gw.shadows_done()
    assert not any(r.request_id.startswith("shadow-") for r in gw.engine.requests)
    skipped = {"adapter": "pirate@v2", "outcome": "skipped"}
    assert gw.metric("loragate_shadow_requests_total", skipped) == 1


async def test_the_rollouts_settings_bound_the_shadows_and_the_log(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    rollouts = {"shadow_max_in_flight": 1, "shadow_log_entries": 1}
    async with started(fake_kit, tmp_path, renderer, rollouts=rollouts) as gw:
        assert (await put_split(gw, **SHADOW_ALL)).status_code == 200
        await gw.ask("acme", "pirate", user="u1")
        await gw.shadows_done()
        await gw.ask("acme", "pirate", user="u2")
        await gw.shadows_done()
        page = (await gw.client.get("/admin/adapters/pirate/shadow", headers=ADMIN)).json()
        assert len(page["data"]) == 1 and page["dropped"] == 1
    async with started(
        fake_kit, tmp_path / "off", renderer, rollouts={"shadow_max_in_flight": 0}
    ) as gw:
        assert (await put_split(gw, **SHADOW_ALL)).status_code == 200
        await gw.ask("acme", "pirate")
        skipped = {"adapter": "pirate@v2", "outcome": "skipped"}
        assert gw.metric("loragate_shadow_requests_total", skipped) == 1


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"weights": {"v1": 100}}, "weights"),  # one version needs a shadow
        ({"weights": {"v1": 100}, "shadow": {"version": "v9", "percent": 5}}, "shadow.version"),
        ({"weights": {"v1": 100}, "shadow": {"version": "v2", "percent": 0}}, "shadow.percent"),
        ({"weights": {"v1": 50, "v2": 50}, "rollback": {"min_requests": 5}}, "rollback"),
        (
            {"weights": {"v1": 50, "v2": 50}, "rollback": {"max_latency_ratio": 0.5}},
            "rollback.max_latency_ratio",
        ),
    ],
)
async def test_bad_shadow_and_rollback_settings_are_400s_naming_the_field(
    gw: Gateway, body: dict[str, Any], param: str
) -> None:
    r = await put_split(gw, **body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param, error


async def test_the_shadow_log_of_an_unknown_name_is_the_usual_404(gw: Gateway) -> None:
    unknown = await gw.client.get("/admin/adapters/nope/shadow", headers=ADMIN)
    split = await gw.client.put(
        "/admin/adapters/nope/split", json={"weights": {"v1": 50, "v2": 50}}, headers=ADMIN
    )
    assert unknown.status_code == split.status_code == 404
    assert unknown.json() == split.json()
    tenant_key = {"Authorization": f"Bearer {KEYS['acme'].key}"}
    forbidden = await gw.client.get("/admin/adapters/pirate/shadow", headers=tenant_key)
    assert forbidden.status_code == 403


async def test_a_failing_canary_is_rolled_back_and_audited_as_system(gw: Gateway) -> None:
    gw.engine.failing.add("v2")
    rollback = {"max_error_rate": 0.2, "min_requests": 3}
    r = await put_split(gw, weights={"v1": 50, "v2": 50}, rollback=rollback)
    assert r.status_code == 200 and r.json()["rollback"]["max_error_rate"] == 0.2
    watch = gw.state.canary_watch
    assert await watch.check() == []  # the window starts here
    users = [f"user-{i}" for i in range(40)]
    canary_users = [
        u for u in users if choose([("v1", 50), ("v2", 50)], bucket("pirate", u)) == "v2"
    ]
    for user in canary_users[:2]:
        with pytest.raises(Exception, match="canary broke"):
            await gw.ask("acme", "pirate", user=user)
    assert await watch.check() == []  # 2 requests: under min_requests
    with pytest.raises(Exception, match="canary broke"):
        await gw.ask("acme", "pirate", user=canary_users[2])
    done = await watch.check()
    assert [(d.version, d.split.name) for d in done] == [("v2", "pirate")]
    assert "error rate 1.000" in done[0].reason
    listing = (await gw.client.get("/admin/adapters/pirate", headers=ADMIN)).json()
    assert listing["split"] is None and listing["rollback"] is None
    # Everyone is back on the stable version.
    assert await gw.ask("acme", "pirate", user=canary_users[0]) == (
        "pirate-v1w0 pirate-v1w1 pirate-v1w2 pirate-v1w3 "
    )
    audit = (await gw.client.get("/admin/audit", headers=ADMIN)).json()["data"]
    top = audit[0]
    assert (top["actor"], top["action"], top["target"]) == (
        "system",
        "adapter.split.rollback",
        "pirate",
    )
    assert top["detail"]["version"] == "v2"
    assert gw.metric("loragate_split_rollbacks_total", {"adapter": "pirate"}) == 1
    assert await watch.check() == []  # nothing left to judge


async def test_a_slow_canary_is_rolled_back(gw: Gateway) -> None:
    gw.engine.slow["v2"] = 0.15
    rollback = {"max_latency_ratio": 3, "min_requests": 3}
    assert (await put_split(gw, weights={"v1": 50, "v2": 50}, rollback=rollback)).status_code == 200
    watch = gw.state.canary_watch
    await watch.check()
    served: dict[str, int] = {"v1": 0, "v2": 0}
    for i in range(40):
        user = f"user-{i}"
        version = choose([("v1", 50), ("v2", 50)], bucket("pirate", user))
        if served[version] < 3:
            await gw.ask("acme", "pirate", user=user)
            served[version] += 1
    assert served == {"v1": 3, "v2": 3}
    done = await watch.check()
    assert [d.version for d in done] == ["v2"] and "latency" in done[0].reason
    assert gw.state.registry.split("pirate") is None


async def test_a_healthy_canary_stays(gw: Gateway) -> None:
    rollback = {"max_error_rate": 0.2, "max_latency_ratio": 1000, "min_requests": 3}
    assert (await put_split(gw, weights={"v1": 50, "v2": 50}, rollback=rollback)).status_code == 200
    watch = gw.state.canary_watch
    await watch.check()
    for i in range(16):
        await gw.ask("acme", "pirate", user=f"user-{i}")
    assert await watch.check() == []
    listing = (await gw.client.get("/admin/adapters/pirate", headers=ADMIN)).json()
    assert listing["split"] == {"v1": 50, "v2": 50}


async def test_an_alias_splits_between_its_tenants_adapters(gw: Gateway) -> None:
    seen: dict[str, str] = {}
    for i in range(24):
        user = f"user-{i}"
        text = await gw.ask("acme", "support", user=user)
        seen[user] = text.split("-")[0]
        expected = choose([("pirate", 50), ("robot", 50)], bucket("acme/support", user))
        assert seen[user] == expected, user
    assert set(seen.values()) == {"pirate", "robot"}
    for user, adapter in list(seen.items())[:6]:  # sticky
        assert (await gw.ask("acme", "support", user=user)).startswith(adapter)


async def test_an_alias_split_may_name_only_its_tenants_models(gw: Gateway) -> None:
    tenant: dict[str, Any] = {
        "models": ["pirate"],
        "aliases": {"support": {"model": "pirate", "split": {"pirate": 50, "robot": 50}}},
    }
    r = await gw.client.post("/admin/tenants", json={"name": "initech", **tenant}, headers=ADMIN)
    assert r.status_code == 400, r.text
    assert "'robot' is not one of the tenant's models" in r.json()["error"]["message"]
    assert r.json()["error"]["param"] == "aliases", r.json()
    tenant["aliases"]["support"]["split"] = {"pirate": 60, "robot": 60}
    tenant["models"] = ["pirate", "robot"]
    r = await gw.client.post("/admin/tenants", json={"name": "initech", **tenant}, headers=ADMIN)
    assert r.status_code == 400 and "sum to 100" in r.json()["error"]["message"]


async def cli(gw: Gateway, *argv: str) -> tuple[int, str, str]:
    args: argparse.Namespace = build_parser().parse_args(
        ["adapters", *argv, "--url", "http://gw", "--admin-key", KEYS["admin"].key]
    )
    out, err = io.StringIO(), io.StringIO()
    transport = httpx.ASGITransport(app=gw.app)
    code = await run_admin_command(args, transport=transport, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_the_cli_sets_a_shadow_and_rollback_and_reads_the_log(gw: Gateway) -> None:
    argv = ["split", "pirate", "v1=100", "--shadow", "v2=100"]
    code, out, err = await cli(
        gw, *argv, "--rollback", "max_error_rate=0.1", "--rollback", "min_requests=20"
    )
    assert code == 0, err
    shown = json.loads(out)
    assert shown["shadow"] == {"version": "v2", "percent": 100}
    assert shown["rollback"] == {
        "max_error_rate": 0.1,
        "max_latency_ratio": None,
        "min_requests": 20,
    }
    await gw.ask("acme", "pirate")
    await gw.shadows_done()
    code, out, _ = await cli(gw, "shadow", "pirate", "--tenant", "acme")
    assert code == 0 and json.loads(out)["data"][0]["shadow"]["version"] == "v2"
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["adapters", "split", "pirate", "v1=100", "--rollback", "speed=2"]
        )
