"""The demo's gateway settings on a fake kit and a small knowledge base."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.demo.config import (
    DemoPaths,
    demo_config,
    write_demo_config,
)
from gateway.demo.keys import DemoKeys, load_or_create_keys
from gateway.demo.knowledge import (
    DemoKnowledgeBase,
    ensure_demo_collections,
)
from gateway.settings import RetrievalSettings, Settings
from tests.conftest import FakeKit
from tests.support.embedders import WordHashEmbedder

FAKE_EMBEDDER = "word-hash"


def fake_kb(cache: Path, counter: list[int] | None = None) -> DemoKnowledgeBase:
    """The demo's collections embedded by the word-hash fake (counts factory calls)."""

    def factory() -> WordHashEmbedder:
        if counter is not None:
            counter.append(1)
        return WordHashEmbedder(name=FAKE_EMBEDDER)

    return ensure_demo_collections(
        cache,
        RetrievalSettings(),
        embedder_factory=factory,
        embedder_name=FAKE_EMBEDDER,
        progress=False,
    )


def demo_gateway_settings(kit: FakeKit, cache: Path, **server: Any) -> tuple[Settings, DemoKeys]:
    """The demo's own config, over the fake kit and the fake-embedded collections."""
    keys = load_or_create_keys(cache)
    paths = DemoPaths(
        base_model=kit.base,
        adapters=dict(kit.adapters),
        collections_root=fake_kb(cache).root,
        data_dir=cache / "registry",
        adapter_root=kit.adapter_root,
    )
    config = demo_config(paths, keys, server)
    config["retrieval"]["preload"] = False  # the fake embedder is handed to create_app
    return write_demo_config(cache / "demo-config.yaml", config), keys
