"""The demo's keys, knowledge base, config and banner, with a fake kit and a fake embedder
(fast: nothing is trained or converted), and a demo-shaped gateway over ASGI.

``demo_gateway_settings`` is shared with the playground's browser test.
"""

from __future__ import annotations

import json
import os
import stat
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from adapters.tooling.demo_kit import TOOL_ADAPTER, DemoKit
from gateway.app import create_app
from gateway.cli.main import main
from gateway.demo import runner
from gateway.demo.banner import demo_banner
from gateway.demo.config import (
    ACME,
    DEMO_MODEL_ID,
    GLOBEX,
)
from gateway.demo.keys import KEYS_FILE, ROLES, DemoKeys, DemoKeysError, load_or_create_keys
from gateway.demo.knowledge import (
    collection_names,
    kb_files,
)
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.rag.embeddings import served_embedder_id
from gateway.settings import RetrievalSettings, Settings
from gateway.settings.keys import parse_key, verify_secret
from loadtests.tool_dataset import tool_definitions
from retrieval import CollectionStore
from tests.conftest import FakeKit
from tests.support.demo_settings import FAKE_EMBEDDER, demo_gateway_settings, fake_kb
from tests.support.embedders import WordHashEmbedder
from tests.support.fakes import FakeEngine
from tests.support.modelkit import write_random_adapter


@asynccontextmanager
async def serve_in_process(
    settings: Settings, renderer: PromptRenderer, engine: FakeEngine
) -> AsyncIterator[httpx.AsyncClient]:
    """The demo-shaped app over ASGI, with the fake engine and the fake embedder."""
    app = create_app(
        settings,
        engine_factory=lambda _: engine,
        renderer=renderer,
        embedder=WordHashEmbedder(name=FAKE_EMBEDDER),
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://demo") as client:
            yield client


# --- keys --------------------------------------------------------------------------


def test_keys_are_made_once_kept_private_and_the_same_on_the_next_run(tmp_path: Path) -> None:
    first = load_or_create_keys(tmp_path)
    path = tmp_path / KEYS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_or_create_keys(tmp_path)
    assert again == first
    assert set(first.keys) == set(ROLES)
    assert len({first.key(role) for role in ROLES}) == len(ROLES)
    for role in ROLES:
        key_id, secret = parse_key(first.key(role)) or ("", "")
        entry = first.entry(role)
        assert entry["id"] == key_id and verify_secret(secret, entry["hash"])
        assert secret not in json.dumps(entry)
    assert [p.name for p in tmp_path.iterdir()] == [KEYS_FILE]  # no temporary file left


def test_racing_demos_agree_on_one_set_of_keys(tmp_path: Path) -> None:
    results: list[DemoKeys] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        barrier.wait()
        results.append(load_or_create_keys(tmp_path))

    threads = [threading.Thread(target=start) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 6 and all(r == results[0] for r in results)


def test_a_loosened_keys_file_is_made_private_again(tmp_path: Path) -> None:
    keys = load_or_create_keys(tmp_path)
    os.chmod(keys.path, 0o644)
    assert load_or_create_keys(tmp_path) == keys
    assert stat.S_IMODE(keys.path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: "not json",
        lambda data: json.dumps({**data, "format": 99}),
        lambda data: json.dumps({**data, "keys": {"admin": data["keys"]["admin"]}}),
        lambda data: json.dumps(
            {**data, "keys": {**data["keys"], "acme": {**data["keys"]["acme"], "key": "lg-x"}}}
        ),
    ],
    ids=["not-json", "other-format", "missing-role", "key-and-hash-differ"],
)
def test_a_damaged_keys_file_is_refused_with_what_to_do(
    tmp_path: Path, damage: Callable[[dict[str, Any]], str]
) -> None:
    keys = load_or_create_keys(tmp_path)
    keys.path.write_text(damage(json.loads(keys.path.read_text())))
    with pytest.raises(DemoKeysError, match=r"delete (it|the file)"):
        load_or_create_keys(tmp_path)


# --- knowledge base ------------------------------------------------------------------


def test_the_knowledge_base_covers_two_products_in_three_languages_each() -> None:
    assert collection_names() == sorted([ACME.collection, GLOBEX.collection])
    for name in collection_names():
        files = kb_files(name)
        languages = {source.split("/")[1] for source, _ in files}
        assert len(languages) >= 3, (name, languages)
        assert len(files) >= 2 * len(languages)
        for source, path in files:
            assert path.read_text().startswith("# "), source  # the title citations show
    english = "".join(p.read_text() for s, p in kb_files(ACME.collection) if "/en/" in s)
    for fact in ("E21", "15 seconds", "three beeps", "24-month", "+1-555-0142"):
        assert fact in english, fact


def test_collections_are_ingested_once_then_loaded_from_the_cache(tmp_path: Path) -> None:
    calls: list[int] = []
    kb = fake_kb(tmp_path, calls)
    assert calls == [1]
    assert kb.documents == {name: len(kb_files(name)) for name in collection_names()}
    assert fake_kb(tmp_path, calls) == kb
    assert calls == [1]  # the second start embeds nothing
    store = CollectionStore(kb.root, WordHashEmbedder(name=FAKE_EMBEDDER))
    hits = store.search(ACME.collection, "factory reset three beeps Clean Steam", k=3, mode="bm25")
    assert hits and hits[0].source.startswith(f"{ACME.collection}/")
    assert any("three beeps" in hit.text for hit in hits)
    assert not list(tmp_path.glob(".demo-kb-*"))  # no temporary folder left


# --- config and banner -----------------------------------------------------------------


def test_the_demo_config_validates_and_holds_no_secret(fake_kit: FakeKit, tmp_path: Path) -> None:
    settings, keys = demo_gateway_settings(fake_kit, tmp_path, port=8123)
    text = (tmp_path / "demo-config.yaml").read_text()
    for role in ROLES:
        assert keys.key(role) not in text
        parsed = parse_key(keys.key(role))
        assert parsed is not None and parsed[1] not in text
    assert Settings.load(tmp_path / "demo-config.yaml") == settings
    assert stat.S_IMODE((tmp_path / "demo-config.yaml").stat().st_mode) == 0o644
    assert settings.metrics.enabled and settings.metrics.require_admin
    assert [k.model_dump(exclude_none=True) for k in settings.admin.keys] == [keys.entry("admin")]
    assert settings.server.port == 8123 and settings.model.served_name == DEMO_MODEL_ID
    for tenant in (ACME, GLOBEX):
        config = settings.tenants[tenant.name]
        alias = config.aliases[tenant.alias]
        assert alias.model == tenant.adapter and config.default_model == tenant.alias
        assert alias.policy is not None and alias.policy.rag is not None
        assert alias.policy.rag.collections == [tenant.collection]
        assert config.collections == [tenant.collection]
    acme_policy = settings.tenants[ACME.name].aliases[ACME.alias].policy
    assert acme_policy is not None and "cite-sources@v1" in (acme_policy.prompts or [])
    assert "[n]" in settings.tenancy().prompt("cite-sources@v1")


def test_prepare_demo_twice_gives_the_same_keys_and_config(
    fake_kit: FakeKit, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "kit").mkdir()
    base = tmp_path / "kit" / "smollm2-135m-instruct-test"
    base.symlink_to(fake_kit.base, target_is_directory=True)
    kit = DemoKit(root=fake_kit.adapter_root, base_dir=base, adapters=dict(fake_kit.adapters))
    monkeypatch.setattr(runner, "ensure_demo_kit", lambda cache, progress: kit)
    monkeypatch.setattr(
        runner,
        "ensure_demo_collections",
        lambda cache, retrieval, progress: fake_kb(cache),
    )
    cache = tmp_path / "cache"
    settings, keys, path = runner.prepare_demo(cache, {"port": 8765})
    again, keys_again, _ = runner.prepare_demo(cache, {"port": 8765})
    assert keys_again == keys and again == settings
    assert path == cache / "demo-config.yaml" and Settings.load(path) == settings
    assert settings.registry.data_dir == tmp_path / "kit" / f"registry-{base.name}"

    banner = demo_banner(settings, keys, path)
    for role in ROLES:
        assert keys.key(role) in banner
    for expected in (
        "http://127.0.0.1:8765/playground",
        "http://127.0.0.1:8765/console",
        "http://127.0.0.1:8765/metrics",
        'base_url="http://127.0.0.1:8765/v1"',
        'reply.model_extra["citations"]',
        f'model="{ACME.alias}"',
        f'model="{GLOBEX.alias}"',
        str(keys.path),
    ):
        assert expected in banner, expected
    wildcard = settings.model_copy(
        update={"server": settings.server.model_copy(update={"host": "0.0.0.0"})}
    )
    assert "http://127.0.0.1:8765/playground" in demo_banner(wildcard, keys, path)


def test_loragate_demo_hands_its_options_to_the_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_run(cache_dir: Path | None, server: dict[str, Any], serve: object) -> int:
        seen.update(cache_dir=cache_dir, server=server, serve=serve)
        return 0

    monkeypatch.setattr(runner, "run_demo", fake_run)
    assert main(["demo", "--cache-dir", "/tmp/c", "--port", "9001"]) == 0
    assert seen["cache_dir"] == Path("/tmp/c") and seen["server"] == {"port": 9001}
    assert callable(seen["serve"])


def test_the_banner_waits_for_ready(
    fake_kit: FakeKit, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter([503, 503, 200])

    class Ready(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(next(answers, 200) if self.path == "/ready" else 404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with ThreadingHTTPServer(("127.0.0.1", 0), Ready) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        settings, _ = demo_gateway_settings(fake_kit, tmp_path, port=server.server_address[1])
        runner.announce_when_ready(settings, "BANNER-TEXT").join(timeout=10)
        server.shutdown()
    assert capsys.readouterr().out.count("BANNER-TEXT") == 1


# --- the demo-shaped gateway -------------------------------------------------------------


def auth(keys: DemoKeys, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys.key(role)}"}


async def test_the_demo_gateway_serves_tenants_aliases_rag_admin_and_playground(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    settings, keys = demo_gateway_settings(fake_kit, tmp_path)
    engine = FakeEngine(max_model_len=2048)
    async with serve_in_process(settings, renderer, engine) as client:
        for tenant in (ACME, GLOBEX):
            r = await client.get("/v1/models", headers=auth(keys, tenant.name))
            cards = {c["id"]: c for c in r.json()["data"]}
            assert set(cards) == {
                DEMO_MODEL_ID,
                tenant.adapter,
                tenant.alias,
                served_embedder_id(RetrievalSettings()),
            }
            alias = cards[tenant.alias]  # how the playground tells an alias: root == id
            assert alias["root"] == alias["id"] and alias["parent"] == DEMO_MODEL_ID
            assert cards[tenant.adapter]["root"] != tenant.adapter

        question = {"role": "user", "content": "How do I do a factory reset?"}
        r = await client.post(
            "/v1/chat/completions",
            json={"model": ACME.alias, "messages": [question], "max_tokens": 8},
            headers=auth(keys, ACME.name),
        )
        assert r.status_code == 200, r.text
        citations = r.json()["citations"]
        assert citations and {c["collection"] for c in citations} == {ACME.collection}
        assert engine.requests[-1].adapter is not None
        assert engine.requests[-1].adapter.name == ACME.adapter

        r = await client.post(
            "/v1/retrieval/search",
            json={"collection": ACME.collection, "query": "reset"},
            headers=auth(keys, GLOBEX.name),
        )
        assert r.status_code == 404  # another tenant's collection does not exist for globex

        assert (await client.get("/admin/adapters", headers=auth(keys, "admin"))).status_code == 200
        r = await client.get("/v1/models", headers=auth(keys, "admin"))  # as the banner says
        served = {DEMO_MODEL_ID, "pirate", "robot", served_embedder_id(RetrievalSettings())}
        assert {c["id"] for c in r.json()["data"]} == served
        assert (
            await client.get("/admin/adapters", headers=auth(keys, ACME.name))
        ).status_code == 403
        assert (await client.get("/metrics")).status_code == 401
        assert (await client.get("/metrics", headers=auth(keys, "admin"))).status_code == 200

        page = await client.get("/playground")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        for asset, kind in (("playground.js", "javascript"), ("playground.css", "text/css")):
            r = await client.get(f"/playground/{asset}")
            assert r.status_code == 200 and kind in r.headers["content-type"], asset
        assert (await client.get("/playground/../config.py")).status_code == 404
        assert (await client.get("/playground/nope.js")).status_code == 404


def test_the_playground_loads_nothing_from_elsewhere() -> None:
    static = Path(runner.__file__).parent.parent / "playground" / "static"
    for path in static.iterdir():
        text = path.read_text()
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), path.name
        assert "https://" not in text, path.name
        assert "@import" not in text and "innerHTML" not in text, path.name


def test_demo_config_yaml_round_trips(fake_kit: FakeKit, tmp_path: Path) -> None:
    demo_gateway_settings(fake_kit, tmp_path)
    data = yaml.safe_load((tmp_path / "demo-config.yaml").read_text())
    assert set(data["tenants"]) == {ACME.name, GLOBEX.name}
    assert main(["config", "check", str(tmp_path / "demo-config.yaml")]) == 0


async def test_the_kits_tool_adapter_is_offered_to_both_tenants(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    tool_adapter = write_random_adapter(fake_kit.base, tmp_path / "kit" / TOOL_ADAPTER, seed=3)
    adapters = {**fake_kit.adapters, TOOL_ADAPTER: tool_adapter}
    kit = FakeKit(fake_kit.base, fake_kit.adapter_root, adapters)
    settings, keys = demo_gateway_settings(kit, tmp_path / "cache")
    engine = FakeEngine(max_model_len=2048)
    async with serve_in_process(settings, renderer, engine) as client:
        for tenant in (ACME, GLOBEX):
            r = await client.get("/v1/models", headers=auth(keys, tenant.name))
            cards = {c["id"] for c in r.json()["data"]}
            assert cards == {DEMO_MODEL_ID, tenant.adapter, TOOL_ADAPTER, tenant.alias} | {
                served_embedder_id(RetrievalSettings())
            }
            question = {"role": "user", "content": "Where is my order BP-55530?"}
            body = {
                "model": TOOL_ADAPTER,
                "messages": [question],
                "tools": tool_definitions(["get_order_status", "get_weather"]),
                "max_tokens": 16,
            }
            r = await client.post(
                "/v1/chat/completions", json=body, headers=auth(keys, tenant.name)
            )
            assert r.status_code == 200, r.text
            assert engine.requests[-1].adapter is not None
            assert engine.requests[-1].adapter.name == TOOL_ADAPTER
