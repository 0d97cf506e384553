"""``loragate demo``: build the kit, the keys and the collections once, then serve.

Everything is cached (``$LORAGATE_CACHE`` or ``~/.cache/loragate``): a second start
loads the model and serves, with the same keys. The banner (keys, URLs, SDK examples)
is printed when the gateway answers ``/ready``, not before the engine's start-up logs.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from adapters.tooling.demo_kit import DemoKit, default_cache_dir, ensure_demo_kit
from gateway.demo.banner import base_url, demo_banner
from gateway.demo.config import CONFIG_FILE, DemoPaths, demo_config, write_demo_config
from gateway.demo.keys import DemoKeys, load_or_create_keys
from gateway.demo.knowledge import DemoKnowledgeBase, ensure_demo_collections
from gateway.settings import Settings

Serve = Callable[[Settings, Path], None]
READY_POLL_S = 0.5
READY_WAIT_S = 3600.0


def demo_paths(kit: DemoKit, kb: DemoKnowledgeBase) -> DemoPaths:
    return DemoPaths(
        base_model=kit.base_dir,
        adapters=dict(kit.adapters),
        collections_root=kb.root,
        data_dir=kit.base_dir.parent / f"registry-{kit.base_dir.name}",
        adapter_root=kit.root,
    )


def prepare_demo(
    cache_dir: Path | None, server: dict[str, Any], *, progress: bool = True
) -> tuple[Settings, DemoKeys, Path]:
    """Build (or find) the kit, keys and collections; write and return the config."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    kit = ensure_demo_kit(cache, progress=progress)
    keys = load_or_create_keys(cache)
    # The retrieval settings as the served config will have them (environment included),
    # so the collections are chunked and embedded the way the gateway expects.
    retrieval = Settings.load(None, model={"path": kit.base_dir}).retrieval
    kb = ensure_demo_collections(cache, retrieval, progress=progress)
    config_path = cache / CONFIG_FILE
    settings = write_demo_config(config_path, demo_config(demo_paths(kit, kb), keys, server))
    return settings, keys, config_path


def run_demo(cache_dir: Path | None, server: dict[str, Any], serve: Serve) -> int:
    settings, keys, config_path = prepare_demo(cache_dir, server)
    print(
        f"loragate demo: starting on {base_url(settings)} (the engine takes about 30 s); "
        "keys and examples follow once it is ready.",
        flush=True,
    )
    announce_when_ready(settings, demo_banner(settings, keys, config_path))
    serve(settings, config_path)
    return 0


def announce_when_ready(settings: Settings, banner: str) -> threading.Thread:
    """Print ``banner`` once ``/ready`` answers 200 (a daemon thread; gives up after an
    hour, or silently if the server never comes up)."""

    def wait() -> None:
        url = base_url(settings) + "/ready"
        deadline = time.monotonic() + READY_WAIT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=2.0, trust_env=False).status_code == 200:
                    print(banner, file=sys.stdout, flush=True)
                    return
            except httpx.HTTPError:
                pass
            time.sleep(READY_POLL_S)

    thread = threading.Thread(target=wait, name="demo-banner", daemon=True)
    thread.start()
    return thread
