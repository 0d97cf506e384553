"""Adapters loaded on first request from a tenant's S3 bucket prefix (moto on loopback),
through the whole gateway over ASGI with the fake engine: single flight, refusals equal
to a registration's, tenant isolation, the miss memory, the disk cache's bounds."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from adapters.manifest import AdapterStatus
from gateway.adapter_runtime.on_demand import scoped_name
from gateway.adapter_runtime.on_demand_report import Tier
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from gateway.settings.keys import generate_key
from gateway.state import GatewayState
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.engine_fixtures import free_port
from tests.support.modelkit import write_random_adapter
from tests.support.s3_server import ACCESS_KEY_ENV, BUCKET, SECRET_KEY_ENV, S3Server

KEYS = {name: generate_key() for name in ("acme", "zeta")}
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]
ADAPTER_BYTES = 35_110  # a rank-8 random adapter of the tiny Llama, both files


@dataclass
class Fleet:
    gateway: FakeGateway
    s3: S3Server
    prefixes: dict[str, str]
    kit: FakeKit
    work: Path

    async def chat(self, tenant: str, model: str) -> httpx.Response:
        return await self.gateway.client.post(
            "/v1/chat/completions",
            json={"model": model, "messages": MESSAGES, "max_tokens": 2},
            headers={"Authorization": f"Bearer {KEYS[tenant].key}"},
        )

    def put(self, tenant: str, name: str, *, seed: int = 1, **kwargs: Any) -> Path:
        folder = self.work / f"{tenant}-{name}-{seed}"
        write_random_adapter(self.kit.base, folder, seed=seed, **kwargs)
        self.s3.put_folder(folder, f"{self.prefixes[tenant]}{name}/")
        return folder

    def reads(self, tenant: str, name: str) -> int:
        return len(self.s3.reads(f"{self.prefixes[tenant]}{name}/"))

    @property
    def state(self) -> GatewayState:
        state = self.gateway.app.state.gateway
        assert isinstance(state, GatewayState)
        return state

    def entries(self, tenant: str, name: str) -> list[Any]:
        return self.state.registry.entries(scoped_name(tenant, name))

    def loads(self, tenant: str, name: str) -> int:
        scoped = scoped_name(tenant, name)
        return sum(1 for ref in self.gateway.engine.added if ref.name == scoped)


def s3_source(s3: S3Server, prefix: str, **quota: Any) -> dict[str, Any]:
    return {
        "kind": "s3",
        "endpoint": s3.endpoint,
        "bucket": BUCKET,
        "prefix": prefix,
        "access_key_env": ACCESS_KEY_ENV,
        "secret_key_env": SECRET_KEY_ENV,
        **quota,
    }


FleetFactory = Callable[..., AbstractAsyncContextManager[Fleet]]


@pytest.fixture
def fleet_of(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, s3_server: S3Server
) -> FleetFactory:
    """A gateway whose tenants ``acme`` and ``zeta`` each have a prefix of the bucket."""

    @asynccontextmanager
    async def make(
        cache: dict[str, Any] | None = None,
        registry: dict[str, Any] | None = None,
        **quotas: dict[str, Any],
    ) -> AsyncIterator[Fleet]:
        run = uuid.uuid4().hex[:8]
        prefixes = {t: f"{run}/{t}/" for t in KEYS}
        tenants = {
            t: {
                "keys": [{"id": k.key_id, "hash": k.hash}],
                "models": ["tiny-base"],
                "adapter_source": s3_source(s3_server, prefixes[t], **quotas.get(t, {})),
            }
            for t, k in KEYS.items()
        }
        settings = fake_settings(
            fake_kit,
            tmp_path / "registry",
            tenants=tenants,
            registry={
                "data_dir": tmp_path / "registry",
                "allowed_roots": [fake_kit.adapter_root, tmp_path],
                **(registry or {}),
            },
            adapter_cache=cache or {},
        )
        async with run_fake_gateway(settings, renderer) as gateway:
            yield Fleet(gateway, s3_server, prefixes, fake_kit, tmp_path)

    return make


async def test_first_request_fetches_registers_loads_and_serves(fleet_of: FleetFactory) -> None:
    async with fleet_of() as fleet:
        fleet.put("acme", "support")
        answer = await fleet.chat("acme", "support")
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "support"
        served = fleet.gateway.engine.requests[-1].adapter
        assert served is not None and served.name == scoped_name("acme", "support")
        (entry,) = fleet.entries("acme", "support")
        assert entry.status is AdapterStatus.ACTIVE
        assert entry.source == f"tenant:acme:s3://{BUCKET}/{fleet.prefixes['acme']}support/"
        assert (Path(served.path) / "adapter_model.safetensors").is_file()
        again = await fleet.chat("acme", "support")
        assert again.status_code == 200
        assert fleet.reads("acme", "support") == 3  # one list, two files: the first time only
        listing = (await fleet.gateway.client.get("/admin/adapters", headers=ADMIN)).json()
        report = listing["on_demand"]
        assert report["requests"]["source"] == 1 and report["requests"]["cpu_cache"] == 1
        assert report["hit_rates"]["source"] == 0.5
        assert report["tenants"] == {"acme": {"adapters": 1, "bytes": entry.size_bytes}}
        metrics = (await fleet.gateway.client.get("/metrics", headers=ADMIN)).text
        assert 'loragate_adapter_tier_requests_total{tier="source"} 1.0' in metrics
        assert f"loragate_adapter_disk_cache_bytes {float(entry.size_bytes)}" in metrics


async def test_fifty_concurrent_first_requests_read_the_store_and_load_once(
    fleet_of: FleetFactory,
) -> None:
    async with fleet_of() as fleet:
        fleet.put("acme", "burst")
        answers = await asyncio.gather(*(fleet.chat("acme", "burst") for _ in range(50)))
        assert [a.status_code for a in answers] == [200] * 50
        assert fleet.reads("acme", "burst") == 3
        assert fleet.loads("acme", "burst") == 1
        assert len(fleet.entries("acme", "burst")) == 1
        assert fleet.state.on_demand.tiers[Tier.SOURCE] == 50


async def test_a_bad_adapter_in_the_bucket_is_refused_as_its_registration_is(
    fleet_of: FleetFactory,
) -> None:
    async with fleet_of() as fleet:
        folder = fleet.put("acme", "wide", rank=32)  # above the engine's max_lora_rank
        refused = await fleet.chat("acme", "wide")
        registered = await fleet.gateway.client.post(
            "/admin/adapters", json={"name": "wide", "path": str(folder)}, headers=ADMIN
        )
        assert refused.status_code == registered.status_code == 422
        assert refused.json() == registered.json()
        assert refused.json()["error"]["code"] == "lora_rank_too_large"
        reads = fleet.reads("acme", "wide")
        again = await fleet.chat("acme", "wide")  # remembered: the bucket is not read again
        assert again.content == refused.content
        assert fleet.reads("acme", "wide") == reads
        assert fleet.entries("acme", "wide") == []


async def test_another_tenants_names_answer_the_unknown_model_404(fleet_of: FleetFactory) -> None:
    async with fleet_of() as fleet:
        fleet.put("acme", "secret-a")
        assert (await fleet.chat("acme", "secret-a")).status_code == 200
        unknown = await fleet.chat("zeta", "never-existed")
        assert unknown.status_code == 404
        probes = [
            "secret-a",
            scoped_name("acme", "secret-a"),
            f"{scoped_name('acme', 'secret-a')}@v1",
            "../acme/secret-a",
            f"/{fleet.prefixes['acme']}secret-a",
            f"s3://{BUCKET}/{fleet.prefixes['acme']}secret-a",
            "a..b",
            "secret-a/../../x",
            "%2e%2e",
        ]
        before = len(fleet.s3.calls())
        for probe in probes:
            answer = await fleet.chat("zeta", probe)
            assert (answer.status_code, answer.content) == (404, unknown.content), probe
        assert fleet.reads("acme", "secret-a") == 3  # acme's own fetch, nothing more
        probed = fleet.s3.calls()[before:]
        zeta = fleet.prefixes["zeta"]
        assert probed and all(c.prefix.startswith(zeta) for c in probed)  # only zeta's prefix
        assert not any(c.path.startswith(f"/{BUCKET}/") for c in probed)  # no object read


async def test_a_miss_is_remembered_then_asked_again(fleet_of: FleetFactory) -> None:
    async with fleet_of({"miss_ttl_seconds": 0.5}) as fleet:
        first = await fleet.chat("acme", "ghost")
        second = await fleet.chat("acme", "ghost")
        assert first.status_code == second.status_code == 404
        assert first.content == second.content
        assert fleet.reads("acme", "ghost") == 1
        await asyncio.sleep(0.6)
        fleet.put("acme", "ghost")  # uploaded since: found once the memory expired
        assert (await fleet.chat("acme", "ghost")).status_code == 200
        assert fleet.reads("acme", "ghost") == 1 + 3


async def test_the_disk_cache_keeps_its_byte_bound_by_dropping_the_coldest(
    fleet_of: FleetFactory,
) -> None:
    async with fleet_of({"disk_mib": 2.5 * ADAPTER_BYTES / 2**20}) as fleet:
        for seed, name in enumerate(("one", "two", "three"), start=1):
            fleet.put("acme", name, seed=seed)
        assert (await fleet.chat("acme", "one")).status_code == 200
        assert (await fleet.chat("acme", "two")).status_code == 200
        assert (await fleet.chat("acme", "one")).status_code == 200  # "two" is colder now
        assert (await fleet.chat("acme", "three")).status_code == 200
        await fleet.state.lifecycle.wait_for_drains()
        assert fleet.entries("acme", "two") == []  # retired, drained, removed
        cached = fleet.state.on_demand.cached()
        assert sorted(e.name for e in cached) == sorted(
            scoped_name("acme", n) for n in ("one", "three")
        )
        assert sum(e.size_bytes for e in cached) <= fleet.state.on_demand.disk_limit_bytes
        assert not (
            fleet.state.registry.data_dir / "adapters" / scoped_name("acme", "two")
        ).exists()
        assert (await fleet.chat("acme", "two")).status_code == 200  # fetched again
        (entry,) = fleet.entries("acme", "two")
        assert entry.version == "v2"  # a new version: ids and refs are never reused
        assert fleet.reads("acme", "two") == 6
        metrics = (await fleet.gateway.client.get("/metrics", headers=ADMIN)).text
        assert 'loragate_adapter_evictions_total{reason="disk"} 2.0' in metrics


async def test_tenant_quota_and_idle_expiry(fleet_of: FleetFactory) -> None:
    quota = {"acme": {"max_adapters": 1}}
    async with fleet_of({"idle_seconds": 0.3}, **quota) as fleet:
        fleet.put("acme", "first", seed=1)
        fleet.put("acme", "second", seed=2)
        fleet.put("zeta", "mine", seed=3)
        for tenant, name in (("acme", "first"), ("acme", "second"), ("zeta", "mine")):
            assert (await fleet.chat(tenant, name)).status_code == 200
        await fleet.state.lifecycle.wait_for_drains()
        assert fleet.entries("acme", "first") == []  # over acme's quota of one
        assert len(fleet.entries("zeta", "mine")) == 1  # zeta has no quota
        await asyncio.sleep(0.4)
        await fleet.state.on_demand.sweep()
        await fleet.state.lifecycle.wait_for_drains()
        assert fleet.state.on_demand.cached() == []


async def test_the_tenant_admin_api_sets_and_validates_a_source(
    fleet_of: FleetFactory, s3_server: S3Server
) -> None:
    async with fleet_of() as fleet:
        client = fleet.gateway.client
        prefix = f"{uuid.uuid4().hex[:8]}/api/"
        bad = await client.post(
            "/admin/tenants",
            json={"name": "api", "adapter_source": {"kind": "s3", "bucket": "x"}},
            headers=ADMIN,
        )
        assert bad.status_code == 400
        assert set(bad.json()["error"]) == {"message", "type", "param", "code"}
        made = await client.post(
            "/admin/tenants",
            json={
                "name": "api",
                "models": ["tiny-base"],
                "adapter_source": s3_source(s3_server, prefix),
            },
            headers=ADMIN,
        )
        assert made.status_code == 201, made.text
        assert made.json()["adapter_source"]["access_key_env"] == ACCESS_KEY_ENV
        key = (
            await client.post("/admin/tenants/api/keys", json={"name": "k"}, headers=ADMIN)
        ).json()
        folder = write_random_adapter(fleet.kit.base, fleet.work / "api-tone", seed=9)
        s3_server.put_folder(folder, f"{prefix}tone/")
        answer = await client.post(
            "/v1/chat/completions",
            json={"model": "tone", "messages": MESSAGES, "max_tokens": 2},
            headers={"Authorization": f"Bearer {key['key']}"},
        )
        assert answer.status_code == 200, answer.text


def test_config_refuses_sources_outside_the_registry_rules(
    fake_kit: FakeKit, tmp_path: Path
) -> None:
    tenant = {"keys": [], "models": ["tiny-base"]}
    outside = {**tenant, "adapter_source": {"kind": "folder", "path": "/etc"}}
    with pytest.raises(ValueError, match="allowed_roots"):
        fake_settings(fake_kit, tmp_path, tenants={"acme": outside})
    memory = {**tenant, "adapter_source": {"kind": "uri", "uri": "memory://x"}}
    with pytest.raises(ValueError, match="allowed_protocols"):
        fake_settings(fake_kit, tmp_path, tenants={"acme": memory})
    inside = {**tenant, "adapter_source": {"kind": "folder", "path": str(fake_kit.adapter_root)}}
    assert (
        fake_settings(fake_kit, tmp_path, tenants={"acme": inside}).tenants["acme"].adapter_source
    )


def folder_source_settings(fake_kit: FakeKit, tmp_path: Path, root: Path) -> Settings:
    """Tenant ``acme`` (its key in ``KEYS``) whose adapter source is the folder ``root``,
    under the registry's allowed root ``tmp_path / "mounted"``."""
    key = KEYS["acme"]
    tenants = {
        "acme": {
            "keys": [{"id": key.key_id, "hash": key.hash}],
            "models": ["tiny-base"],
            "adapter_source": {"kind": "folder", "path": str(root)},
        }
    }
    return fake_settings(
        fake_kit,
        tmp_path / "registry",
        tenants=tenants,
        registry={"data_dir": tmp_path / "registry", "allowed_roots": [tmp_path / "mounted"]},
    )


async def test_a_folder_source_serves_its_adapters_on_first_request(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    root = tmp_path / "mounted" / "acme"
    write_random_adapter(fake_kit.base, root / "tone", seed=5)
    key = KEYS["acme"]
    settings = folder_source_settings(fake_kit, tmp_path, root)
    async with run_fake_gateway(settings, renderer) as gateway:
        headers = {"Authorization": f"Bearer {key.key}"}
        body = {"messages": MESSAGES, "max_tokens": 2}
        ok = await gateway.client.post(
            "/v1/chat/completions", json={"model": "tone", **body}, headers=headers
        )
        assert ok.status_code == 200, ok.text
        missing = await gateway.client.post(
            "/v1/chat/completions", json={"model": "absent", **body}, headers=headers
        )
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "model_not_found"


async def test_an_unreadable_source_answers_503_and_is_asked_again(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, s3_server: S3Server
) -> None:
    key = KEYS["acme"]
    dead = s3_source(s3_server, "dead/")
    dead["endpoint"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    tenants = {
        "acme": {
            "keys": [{"id": key.key_id, "hash": key.hash}],
            "models": ["*"],  # every registered name too: the namespace still decides
            "adapter_source": dead,
        }
    }
    settings = fake_settings(fake_kit, tmp_path / "registry", tenants=tenants)
    async with run_fake_gateway(settings, renderer) as gateway:
        headers = {"Authorization": f"Bearer {key.key}"}

        async def chat(model: str) -> httpx.Response:
            body = {"model": model, "messages": MESSAGES, "max_tokens": 2}
            return await gateway.client.post("/v1/chat/completions", json=body, headers=headers)

        for _ in range(2):  # not remembered: each request asks the store again
            down = await chat("tone")
            assert down.status_code == 503
            assert down.json()["error"]["code"] == "adapter_source_unavailable"
            assert down.headers["retry-after"] == "5"
        state = gateway.app.state.gateway
        assert state.on_demand.tiers["unavailable"] == 2
        unknown = await chat("never-there-at-all" + "x" * 60)  # too long for a namespace
        for probe in ("../x", "/etc/passwd", "s3://adapters/x", "a..b"):
            answer = await chat(probe)
            assert (answer.status_code, answer.content) == (404, unknown.content), probe
        assert (await chat("pirate")).status_code == 200  # a registered adapter, via '*'


def tar_gz(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


def packed(folder: Path, top: str = "") -> bytes:
    """``folder``'s files as a .tar.gz, under ``top/`` when given."""
    return tar_gz(
        [(member(f"{top}/{p.name}" if top else p.name), p.read_bytes()) for p in folder.iterdir()]
    )


def hostile(folder: Path, case: str) -> bytes:
    config = (member("adapter_config.json"), (folder / "adapter_config.json").read_bytes())
    weights = "adapter_model.safetensors"
    bad = {
        "bomb": (member(weights), bytes(3 * 2**20)),  # 3 MiB of zeros, ~3 KiB packed
        "symlink": (member(weights, tarfile.SYMTYPE, "/etc/passwd"), None),
        "hardlink": (member(weights, tarfile.LNKTYPE, "adapter_config.json"), None),
        "traversal": (member(f"../{weights}"), (folder / weights).read_bytes()),
        "device": (member(weights, tarfile.CHRTYPE), None),
    }[case]
    return tar_gz([config, bad])


async def test_an_archived_adapter_in_the_bucket_is_unpacked_validated_and_served(
    fleet_of: FleetFactory,
) -> None:
    async with fleet_of() as fleet:
        folder = write_random_adapter(fleet.kit.base, fleet.work / "packed", seed=4)
        key = f"{fleet.prefixes['acme']}packed.tar.gz"
        fleet.s3.client().put_object(Bucket=BUCKET, Key=key, Body=packed(folder, top="packed"))
        answer = await fleet.chat("acme", "packed")
        assert answer.status_code == 200, answer.text
        (entry,) = fleet.entries("acme", "packed")
        assert entry.source == f"tenant:acme:s3://{BUCKET}/{key}"
        weights = (folder / "adapter_model.safetensors").read_bytes()
        assert entry.sha256 == hashlib.sha256(weights).hexdigest()
        served = fleet.gateway.engine.requests[-1].adapter
        assert served is not None and served.name == scoped_name("acme", "packed")
        assert (Path(served.path) / "adapter_model.safetensors").read_bytes() == weights
        # zeta's namespace has no such archive: the unknown-model 404
        assert (await fleet.chat("zeta", "packed")).status_code == 404


@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("bomb", "archive_too_large"),
        ("symlink", "archive_link"),
        ("hardlink", "archive_link"),
        ("traversal", "archive_path_traversal"),
        ("device", "archive_special_file"),
    ],
)
async def test_a_hostile_archive_in_the_bucket_is_refused_as_its_upload_is(
    fleet_of: FleetFactory, case: str, code: str
) -> None:
    async with fleet_of(registry={"max_weights_mib": 1}) as fleet:
        folder = write_random_adapter(fleet.kit.base, fleet.work / "base-files", seed=6)
        data = hostile(folder, case)
        fleet.s3.client().put_object(
            Bucket=BUCKET, Key=f"{fleet.prefixes['acme']}evil.tar.gz", Body=data
        )
        refused = await fleet.chat("acme", "evil")
        uploaded = await fleet.gateway.client.post(
            "/admin/adapters",
            data={"name": "evil"},
            files={"file": ("evil.tar.gz", data, "application/gzip")},
            headers=ADMIN,
        )
        assert refused.status_code == uploaded.status_code
        assert 400 <= refused.status_code < 500
        assert refused.json() == uploaded.json()
        assert refused.json()["error"]["code"] == code
        assert fleet.entries("acme", "evil") == []
        assert not any(fleet.work.rglob("passwd"))  # nothing was written outside


async def test_one_tenants_flood_of_unknown_names_keeps_anothers_remembered_miss(
    fleet_of: FleetFactory,
) -> None:
    async with fleet_of({"miss_max_entries": 3}) as fleet:
        assert (await fleet.chat("zeta", "ghost")).status_code == 404
        assert fleet.reads("zeta", "ghost") == 1
        for i in range(10):  # more unknown names than a tenant's memory holds
            assert (await fleet.chat("acme", f"flood-{i}")).status_code == 404
        assert (await fleet.chat("zeta", "ghost")).status_code == 404
        assert fleet.reads("zeta", "ghost") == 1  # still remembered: zeta's store not asked
        assert (await fleet.chat("acme", "flood-9")).status_code == 404
        assert fleet.reads("acme", "flood-9") == 1  # acme's newest names are remembered ...
        assert (await fleet.chat("acme", "flood-0")).status_code == 404
        assert fleet.reads("acme", "flood-0") == 2  # ... its oldest went out of its own memory
        listing = (await fleet.gateway.client.get("/admin/adapters", headers=ADMIN)).json()
        assert listing["on_demand"]["remembered_misses"] == 1 + 3
        assert listing["on_demand"]["miss_tenants"] == 2


async def test_a_folder_source_serves_archives_and_refuses_links_out_of_it(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    root = tmp_path / "mounted" / "acme"
    root.mkdir(parents=True)
    folder = write_random_adapter(fake_kit.base, tmp_path / "elsewhere" / "tone", seed=7)
    (root / "tone.tar.gz").write_bytes(packed(folder))
    (tmp_path / "elsewhere" / "out.tar.gz").write_bytes(packed(folder))
    (root / "linked.tar.gz").symlink_to(tmp_path / "elsewhere" / "out.tar.gz")
    key = KEYS["acme"]
    settings = folder_source_settings(fake_kit, tmp_path, root)
    async with run_fake_gateway(settings, renderer) as gateway:
        headers = {"Authorization": f"Bearer {key.key}"}
        body = {"messages": MESSAGES, "max_tokens": 2}

        async def chat(model: str) -> httpx.Response:
            return await gateway.client.post(
                "/v1/chat/completions", json={"model": model, **body}, headers=headers
            )

        assert (await chat("tone")).status_code == 200
        served = gateway.engine.requests[-1].adapter
        assert served is not None and served.name == scoped_name("acme", "tone")
        linked = await chat("linked")
        assert linked.status_code == 400, linked.text
        assert linked.json()["error"]["code"] == "source_not_allowed"
