"""Several gateways, one adapter registry: a real PostgreSQL (``tests/support/postgres_fixtures``)
holds the registry document, one folder (the "shared volume") the adapter files.

Registries first (two objects on one database, as two processes would be), then two
gateway apps over ASGI with the fake engine."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from adapters.base_model import BaseModelSpec
from adapters.common.pg_connection import PostgresConnection
from adapters.errors import AdapterConflictError, AdapterNotFoundError
from adapters.limits import AdapterLimits
from adapters.manifest import AdapterStatus
from adapters.pg_registry_state import PostgresStateStore
from adapters.registry import AdapterRegistry
from adapters.registry_state_store import RegistryUnavailableError
from adapters.sources import LocalDirectorySource
from gateway.adapter_runtime.lifecycle import AdapterLifecycle
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import SharedStoreSettings
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.admin_requests import ADMIN, chat, new_adapter, register
from tests.support.modelkit import tiny_llama_dir, write_random_adapter
from tests.support.postgres_fixtures import PostgresServer, write_url

LIMITS = AdapterLimits(max_lora_rank=16)


@pytest.fixture(scope="module")
def base() -> BaseModelSpec:
    return BaseModelSpec.from_directory(tiny_llama_dir(), name="tiny-base")


@pytest.fixture(scope="module")
def source_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("incoming")
    for seed in range(6):
        write_random_adapter(tiny_llama_dir(), root / f"a{seed}", seed=seed)
    return root


@pytest.fixture
def open_shared(
    pg_url: str, tmp_path: Path, base: BaseModelSpec
) -> Iterator[Callable[..., AdapterRegistry]]:
    """Registries on the test's database and one shared data folder; a test that watches
    a registry's state store builds it and passes it in (``store``)."""
    opened: list[AdapterRegistry] = []

    def open_(
        refresh_seconds: float = 0.1,
        timeout: float = 5.0,
        store: PostgresStateStore | None = None,
    ) -> AdapterRegistry:
        store = store or PostgresStateStore(pg_url, timeout=timeout)
        reg = AdapterRegistry.open(
            tmp_path / "shared", base, LIMITS, state_store=store, refresh_seconds=refresh_seconds
        )
        opened.append(reg)
        return reg

    yield open_
    for reg in opened:
        reg.close()


def source(root: Path, seed: int) -> LocalDirectorySource:
    return LocalDirectorySource(root / f"a{seed}", [root])


def wait_for(check: Callable[[], bool], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "the other registry did not see the change"
        time.sleep(0.02)


def refs(reg: AdapterRegistry) -> dict[str, str]:
    return {e.ref: e.status.value for e in reg.entries()}


def test_a_registration_in_one_is_served_by_the_other(open_shared, source_root):
    a, b = open_shared(), open_shared()
    assert a.shared and b.shared
    entry = a.register("tone", source(source_root, 0))
    wait_for(lambda: "tone@v1" in refs(b))  # b's watcher re-read the document
    hit = b.resolve("tone")
    assert (hit.ref, hit.lora_int_id, hit.sha256) == (entry.ref, entry.lora_int_id, entry.sha256)
    assert hit.path == entry.path and (hit.path / "adapter_model.safetensors").is_file()

    b.register("tone", source(source_root, 1), activate=True)  # b decides from fresh state
    b.retire("tone", "v1")
    wait_for(lambda: refs(a) == {"tone@v1": "retiring", "tone@v2": "active"})
    assert a.resolve("tone").version == "v2"
    with pytest.raises(AdapterNotFoundError):
        a.resolve("tone@v1")
    a.remove("tone", "v1")
    wait_for(lambda: "tone@v1" not in refs(b))
    assert not (b.data_dir / "adapters" / "tone" / "v1").exists()
    with pytest.raises(AdapterConflictError) as reused:  # never reused, whoever asks
        b.register("tone", source(source_root, 2), version="v1")
    assert reused.value.code == "adapter_version_exists"


def test_concurrent_registrations_never_share_an_id_or_a_version(open_shared, source_root):
    a, b = open_shared(refresh_seconds=5), open_shared(refresh_seconds=5)
    results: list[Any] = []
    start = threading.Barrier(6)

    def add(reg: AdapterRegistry, seed: int) -> None:
        start.wait()
        try:
            results.append(reg.register("tone", source(source_root, seed)))
        except Exception as exc:  # noqa: BLE001 (reported by the assertion below)
            results.append(exc)

    threads = [
        threading.Thread(target=add, args=(reg, seed))
        for seed, reg in enumerate((a, b, a, b, a, b))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(not isinstance(r, Exception) for r in results), results
    assert len({r.lora_int_id for r in results}) == 6
    assert len({r.ref for r in results}) == 6
    a.refresh()
    b.refresh()
    assert refs(a) == refs(b) and len(refs(a)) == 6
    assert [e.status for e in a.entries()].count(AdapterStatus.ACTIVE) == 1
    for entry in a.entries():  # each version's files are the ones registered under it
        assert a.verify() == [] and entry.sha256 in {r.sha256 for r in results}


def test_the_same_explicit_version_from_both_one_wins(open_shared, source_root):
    a, b = open_shared(refresh_seconds=5), open_shared(refresh_seconds=5)
    outcomes: list[Any] = []
    start = threading.Barrier(2)

    def add(reg: AdapterRegistry, seed: int) -> None:
        start.wait()
        try:
            outcomes.append(reg.register("tone", source(source_root, seed), version="2025-01"))
        except AdapterConflictError as exc:
            outcomes.append(exc)

    threads = [threading.Thread(target=add, args=(r, s)) for s, r in ((0, a), (1, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [o for o in outcomes if not isinstance(o, Exception)]
    lost = [o for o in outcomes if isinstance(o, AdapterConflictError)]
    assert len(won) == 1 and len(lost) == 1 and lost[0].code == "adapter_version_exists"
    a.refresh()
    assert a.get("tone", "2025-01").sha256 == won[0].sha256
    assert a.verify() == []  # the loser's files did not replace the winner's


def test_a_stale_writer_loses_the_swap_and_reapplies(open_shared, source_root, monkeypatch, pg_url):
    """B has not seen A's write: its save is refused and redone on the fresh state."""
    b_store = PostgresStateStore(pg_url, timeout=5.0)
    a, b = open_shared(refresh_seconds=60), open_shared(refresh_seconds=60, store=b_store)
    a.register("tone", source(source_root, 0))
    b.refresh()
    first = a.register("tone", source(source_root, 1))  # b does not know v2
    # b stays stale: its store reports no change since b last read it.
    monkeypatch.setattr(b_store, "revision", lambda: b.revision)
    saves: list[int] = []
    real_save = b_store.save

    def counting_save(expected: int, state: Any) -> int:
        saves.append(expected)
        return real_save(expected, state)

    monkeypatch.setattr(b_store, "save", counting_save)
    other = b.register("chat", source(source_root, 2))
    assert len(saves) == 2 and saves[0] < saves[1]  # refused once, then re-applied
    assert other.lora_int_id == first.lora_int_id + 1
    a.refresh()
    assert refs(a) == {"chat@v1": "active", "tone@v1": "active", "tone@v2": "inactive"}
    with pytest.raises(AdapterNotFoundError):  # a change no longer valid is refused
        a.retire("chat", purge=True)
        b.activate("chat", "v1")


def test_register_asks_the_revision_once(open_shared, source_root, monkeypatch, pg_url):
    """One revision query per registration (before the files are committed); a save
    made by another gateway after it is caught by the compare-and-swap (test above)."""
    store = PostgresStateStore(pg_url, timeout=5.0)
    a = open_shared(refresh_seconds=60, store=store)
    asked: list[int] = []
    real_revision = store.revision
    monkeypatch.setattr(store, "revision", lambda: asked.append(1) or real_revision())
    a.register("tone", source(source_root, 0))
    assert len(asked) == 1
    asked.clear()
    a.activate("tone", "v1")  # other changes check it themselves
    assert len(asked) == 1


def test_a_save_whose_ack_was_lost_counts_as_done(open_shared, source_root, monkeypatch, pg_url):
    """The UPDATE committed but the connection broke before its answer: the registry
    reads the document back, finds its own change, and keeps the files."""
    store = PostgresStateStore(pg_url, timeout=5.0)
    a = open_shared(store=store)
    real_save = store.save
    cut: list[int] = []

    def committed_then_cut(expected: int, state: Any) -> int:
        real_save(expected, state)
        cut.append(expected)
        raise RegistryUnavailableError("server closed the connection unexpectedly")

    monkeypatch.setattr(store, "save", committed_then_cut)
    entry = a.register("tone", source(source_root, 0))
    monkeypatch.setattr(store, "save", real_save)
    assert cut == [0] and a.revision == 1
    assert a.verify() == [] and a.resolve("tone").lora_int_id == entry.lora_int_id
    assert a.register("tone", source(source_root, 1)).lora_int_id == entry.lora_int_id + 1


def test_postgres_down_reads_keep_the_last_state_and_changes_fail_clearly(
    open_shared, source_root, pg_server: PostgresServer
):
    a = open_shared(refresh_seconds=0.1)
    a.register("tone", source(source_root, 0))
    pg_server.stop()
    try:
        time.sleep(0.3)  # the watcher fails meanwhile: it keeps the last state
        assert a.resolve("tone").version == "v1"
        with pytest.raises(RegistryUnavailableError) as down:
            a.activate("tone", "v1")
        assert down.value.status_code == 503 and down.value.code == "registry_unavailable"
        with pytest.raises(RegistryUnavailableError):
            a.register("tone", source(source_root, 1))
        assert sorted(p.name for p in (a.data_dir / "adapters" / "tone").iterdir()) == ["v1"]
    finally:
        pg_server.start()
    assert a.register("tone", source(source_root, 1)).version == "v2"


def test_an_unreachable_postgres_fails_at_start_without_the_password(tmp_path, base):
    url = "postgresql://loragate:s3cret-pw@127.0.0.1:1/loragate"
    with pytest.raises(RegistryUnavailableError) as refused:
        PostgresStateStore(url, timeout=1)
    assert "s3cret-pw" not in refused.value.message
    assert "unreachable" in refused.value.message


def test_shared_store_settings_need_a_url_source(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="url_env or url_file"):
        SharedStoreSettings(kind="postgres")
    with pytest.raises(ValueError, match=r"LG_TEST_PG_URL \(url_env\) is not set"):
        SharedStoreSettings(kind="postgres", url_env="LG_TEST_PG_URL")
    with pytest.raises(ValueError, match=r"url_file .*missing is not a readable file"):
        SharedStoreSettings(kind="postgres", url_file=tmp_path / "missing")
    secret = tmp_path / "pg-url"
    secret.write_text("postgresql://u:filepw@db/x\n")
    assert (
        SharedStoreSettings(kind="postgres", url_file=secret).url() == "postgresql://u:filepw@db/x"
    )
    monkeypatch.setenv("LG_TEST_PG_URL", "postgresql://u:pw@db/x")
    settings = SharedStoreSettings(kind="postgres", url_env="LG_TEST_PG_URL")
    assert settings.url() == "postgresql://u:pw@db/x"
    assert "pw" not in repr(settings)
    assert SharedStoreSettings().kind == "none"  # one gateway: nothing shared


def test_config_check_validates_the_shared_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.main import main

    path = tmp_path / "loragate.yaml"
    config = {"model": {"path": str(tmp_path)}, "tenants": {"acme": {"models": ["*"]}}}
    config["shared_store"] = {"kind": "postgres", "url_env": "LG_TEST_SHARED_URL"}
    path.write_text(yaml.safe_dump(config))
    monkeypatch.delenv("LG_TEST_SHARED_URL", raising=False)
    assert main(["config", "check", str(path)]) == 1
    assert "shared_store" in capsys.readouterr().err
    monkeypatch.setenv("LG_TEST_SHARED_URL", "postgresql://lg:pw-in-url@db/lg")
    assert main(["config", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert "OK" in out and "pw-in-url" not in out + err


# -- two gateway apps ------------------------------------------------------------------


@asynccontextmanager
async def two_gateways(
    kit: FakeKit, pg_url: str, folder: Path, renderer: PromptRenderer
) -> AsyncIterator[tuple[FakeGateway, FakeGateway]]:
    url_file = await asyncio.to_thread(write_url, folder, pg_url)
    shared = {"kind": "postgres", "url_file": url_file, "refresh_seconds": 0.1, "timeout": 2}
    async with AsyncExitStack() as stack:
        pair = []
        for _ in range(2):
            settings = fake_settings(kit, folder / "shared-volume", shared_store=shared)
            pair.append(await stack.enter_async_context(run_fake_gateway(settings, renderer)))
        yield pair[0], pair[1]


async def eventually(check: Callable[[], Any], seconds: float = 3.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, "the other gateway did not see the change"
        await asyncio.sleep(0.05)


async def model_ids(gw: FakeGateway) -> set[str]:
    return {m["id"] for m in (await gw.client.get("/v1/models")).json()["data"]}


@pytest.mark.asyncio
async def test_two_gateways_register_serve_activate_retire_pin(
    pg_url: str, fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    async with two_gateways(fake_kit, pg_url, tmp_path / "gw", renderer) as (a, b):
        # Config adapters: imported once (by the first), not again by the second.
        listing = (await b.client.get("/admin/adapters", headers=ADMIN)).json()["data"]
        assert {x["name"]: len(x["versions"]) for x in listing} == {"pirate": 1, "robot": 1}

        r = await register(a.client, "tone", new_adapter(fake_kit, seed=41))
        assert r.status_code == 201, r.text
        await eventually(lambda: _has(b, "tone"))
        reply = await chat(b.client, "tone")
        assert reply.status_code == 200, reply.text
        adapter = b.engine.requests[-1].adapter
        assert adapter is not None and adapter.engine_name == "tone@v1"

        r = await register(a.client, "tone", new_adapter(fake_kit, seed=42), activate=False)
        assert r.json()["version"] == "v2"
        await eventually(lambda: _has(b, "tone@v2"))
        r = await b.client.post(
            "/admin/adapters/tone/activate", json={"version": "v2"}, headers=ADMIN
        )
        assert r.status_code == 200, r.text
        await eventually(lambda: _serves(a, "tone", "v2"))

        r = await b.client.delete("/admin/adapters/tone", headers=ADMIN)
        assert r.status_code == 200 and sorted(r.json()["retired"]) == ["tone@v1", "tone@v2"]
        await eventually(lambda: _refused(a, "tone"))
        assert (await chat(a.client, "tone@v1")).status_code == 404

        assert (await a.client.post("/admin/adapters/robot/pin", headers=ADMIN)).status_code == 200
        robot = b.app.state.gateway.registry.resolve("robot")
        await eventually(lambda: _true(robot.lora_int_id in b.engine.pinned))
        await b.app.state.gateway.lifecycle.wait_for_drains()
        await eventually(lambda: _true("tone" not in _names(a)))


async def _true(value: bool) -> bool:
    return value


def _names(gw: FakeGateway) -> set[str]:
    return {e.name for e in gw.app.state.gateway.registry.entries()}


async def _has(gw: FakeGateway, model: str) -> bool:
    return (
        model.split("@")[0] in await model_ids(gw)
        and (await gw.client.get(f"/v1/models/{model}")).status_code == 200
    )


async def _serves(gw: FakeGateway, model: str, version: str) -> bool:
    r = await chat(gw.client, model)
    adapter = gw.engine.requests[-1].adapter if gw.engine.requests else None
    return r.status_code == 200 and adapter is not None and adapter.version == version


async def _refused(gw: FakeGateway, model: str) -> bool:
    return (await chat(gw.client, model)).status_code == 404


@pytest.mark.asyncio
async def test_a_gateway_whose_postgres_is_down_refuses_changes_with_503(
    pg_url: str,
    fake_kit: FakeKit,
    tmp_path: Path,
    renderer: PromptRenderer,
    pg_server: PostgresServer,
) -> None:
    async with two_gateways(fake_kit, pg_url, tmp_path / "gw", renderer) as (a, _b):
        await asyncio.to_thread(pg_server.stop)
        try:
            assert (await chat(a.client, "pirate")).status_code == 200  # last state
            r = await register(a.client, "tone", new_adapter(fake_kit, seed=43))
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "registry_unavailable"
            assert r.json()["error"]["type"] == "service_unavailable"
        finally:
            await asyncio.to_thread(pg_server.start)
        r = await register(a.client, "tone", new_adapter(fake_kit, seed=43))
        assert r.status_code == 201, r.text


@pytest.mark.asyncio
async def test_a_gateway_cannot_start_without_its_postgres(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    url_file = tmp_path / "pg-url"
    url_file.write_text("postgresql://lg:hunter2@127.0.0.1:1/x")
    shared = {"kind": "postgres", "url_file": url_file, "timeout": 1}
    settings = fake_settings(fake_kit, tmp_path / "data", shared_store=shared)
    with pytest.raises(RegistryUnavailableError) as refused:
        async with run_fake_gateway(settings, renderer):
            pass
    assert "hunter2" not in str(refused.value)


def test_an_unreadable_url_never_shows_its_password() -> None:
    """libpq quotes the token it cannot parse; a bad escape in the password must not
    reach the error (it ends in start-up logs)."""
    conn = PostgresConnection(
        "postgresql://loragate:s3cr%zzet@127.0.0.1:9/registry",
        timeout=1,
        schema=(),
        unavailable=RegistryUnavailableError,
        what="adapter registry",
    )
    with pytest.raises(RegistryUnavailableError) as caught:
        conn.run(lambda c: c.execute("SELECT 1"))
    assert "s3cr" not in str(caught.value) and "invalid" in str(caught.value)


async def test_pins_that_failed_to_apply_are_tried_again() -> None:
    """A pin from another gateway that this engine could not load (yet) is retried on
    the next interval, not only after the next registry change."""
    calls: list[int] = []

    async def sync_pins() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("engine busy")

    stub = SimpleNamespace(registry=SimpleNamespace(revision=7), sync_pins=sync_pins)
    task = asyncio.create_task(AdapterLifecycle.follow_registry(stub, 0.001))  # type: ignore[arg-type]
    for _ in range(200):
        if len(calls) >= 2:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.02)  # once applied, an unchanged revision is not applied again
    task.cancel()
    assert len(calls) == 2
