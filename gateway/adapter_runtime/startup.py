"""Start-up: put the registry and the engine in order before the first request.

1. Versions left ``retiring`` by a previous process are removed (nothing runs now).
   Not with a shared registry: another gateway may be draining them; they stay
   ``retiring`` (never served) until that gateway, or an operator, removes them.
2. Adapters named in the config file are imported into the registry, validated like
   any other: a config adapter is registered (as the next version, and activated)
   unless the registry already holds a version of that name with the same weights
   (sha256), validated on the same base model. So config adapters get never-reused
   LoRA ids like every other version, and an operator's runtime choices (activate,
   retire) survive restarts until the config's weights or the base model change.
3. Entries validated against another base model are reported (they are not served).
4. Pinned versions are loaded and pinned in the engine again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path

from adapters.manifest import AdapterStatus
from adapters.sources import LocalDirectorySource
from adapters.store import file_sha256
from adapters.validation import WEIGHTS_FILE
from gateway.adapter_runtime.lifecycle import AdapterLifecycle

logger = logging.getLogger(__name__)


async def prepare_adapters(
    lifecycle: AdapterLifecycle, config_adapters: Sequence[tuple[str, Path]]
) -> None:
    registry = lifecycle.registry
    for entry in [] if registry.shared else registry.entries():
        if entry.status is AdapterStatus.RETIRING:
            await asyncio.to_thread(registry.remove, entry.name, entry.version)
            logger.info("removed %s, retired before the last shutdown", entry.ref)
    for name, path in config_adapters:
        await import_config_adapter(lifecycle, name, path)
    fingerprint = registry.base.fingerprint
    for entry in registry.entries():
        if entry.base_fingerprint != fingerprint:
            logger.warning(
                "adapter %s was validated on another base model and is not served; "
                "register it again for this one",
                entry.ref,
            )
    await restore_pins(lifecycle)


async def import_config_adapter(lifecycle: AdapterLifecycle, name: str, path: Path) -> None:
    """Register the config's adapter ``name`` unless the registry has these weights."""
    weights = path / WEIGHTS_FILE
    sha = await asyncio.to_thread(file_sha256, weights) if weights.is_file() else None
    fingerprint = lifecycle.registry.base.fingerprint
    known = [
        e
        for e in lifecycle.registry.entries(name)
        if e.sha256 == sha
        and e.status is not AdapterStatus.RETIRING
        and e.base_fingerprint == fingerprint
    ]
    if known:
        return
    # The operator named this folder in the config: it is its own allowed root.
    entry = await lifecycle.register(name, LocalDirectorySource(path, [path]), activate=True)
    logger.info("imported config adapter %s from %s", entry.ref, path)


async def restore_pins(lifecycle: AdapterLifecycle) -> None:
    pinned = [
        e
        for e in lifecycle.registry.entries()
        if e.pinned and e.status is not AdapterStatus.RETIRING
    ]
    for entry in pinned[: lifecycle.max_pinned]:
        await lifecycle.restore_pin(entry)
    for entry in pinned[lifecycle.max_pinned :]:
        logger.warning(
            "%s is pinned in the registry but not in the engine: at most %d pins fit",
            entry.ref,
            lifecycle.max_pinned,
        )
