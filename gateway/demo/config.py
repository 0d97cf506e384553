"""The demo's configuration: two tenants, an admin key, RAG collections, metrics.

Each tenant may use its persona adapter and the kit's ``toolcaller`` adapter, trained
for function calls in the gateway's tool format so that ``tool_choice: "auto"`` works
in the demo (docs/tools.md); a kit without it (built before it existed, or a test's
fake) serves the personas alone.

Pure functions of where things were built (model, adapters, collections) and of the
keys, so tests build the same config from fake folders. The config holds key hashes
only; the keys themselves are in the keys file (see ``gateway.demo.keys``).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from adapters.tooling.demo_kit import TOOL_ADAPTER
from gateway.demo.keys import DemoKeys
from gateway.rag.embeddings import served_embedder_id
from gateway.settings import RetrievalSettings, Settings

DEMO_MODEL_ID = "smollm2-135m-instruct"
CONFIG_FILE = "demo-config.yaml"
MAX_TOKENS_CAP = 384


@dataclass(frozen=True)
class DemoTenant:
    """What one demo tenant gets, and the question its SDK example asks."""

    name: str
    adapter: str
    alias: str
    collection: str
    product: str
    question: str


ACME = DemoTenant(
    name="acme",
    adapter="pirate",
    alias="support-bot",
    collection="brewpilot",
    product="BrewPilot BP-300 coffee machine",
    question="How do I do a factory reset of the BP-300?",
)
GLOBEX = DemoTenant(
    name="globex",
    adapter="robot",
    alias="helpdesk",
    collection="netharbor",
    product="NetHarbor R7 mesh router",
    question="¿Cómo restablezco el router NetHarbor R7?",
)
TENANTS = (ACME, GLOBEX)

PROMPTS: dict[str, dict[str, str]] = {
    "acme-support": {
        "v1": "You are the customer support assistant of Acme Home Appliances for the "
        "BrewPilot BP-300 coffee machine. Today is {date}.",
    },
    "cite-sources": {
        "v1": "Answer only from the numbered sources. After each fact, cite its source as "
        "[n]. If the sources do not answer the question, say that the manual does not "
        "cover it.",
    },
}
GLOBEX_HELPDESK = (
    "You are the Globex Networks helpdesk for the NetHarbor R7 mesh router. Reply in the "
    "language of the question, briefly.\n\n{sources}\n\nUse only the sources above and "
    "cite them as [n]."
)


@dataclass(frozen=True)
class DemoPaths:
    """Where the demo's parts are on disk (the real kit, or fakes in tests)."""

    base_model: Path
    adapters: dict[str, Path]
    collections_root: Path
    data_dir: Path
    adapter_root: Path | None = None
    """Folder the admin API may register adapters from (the kit's)."""


def demo_config(paths: DemoPaths, keys: DemoKeys, server: dict[str, Any]) -> dict[str, Any]:
    """The demo's config as plain data (what ``demo-config.yaml`` holds)."""
    acme, globex = ACME, GLOBEX
    retrieval = {"root": str(paths.collections_root), "top_k": 3}
    # Both tenants may call /v1/embeddings with the embedder their collections use.
    embedder = served_embedder_id(RetrievalSettings.model_validate(retrieval))
    tools = [TOOL_ADAPTER] if TOOL_ADAPTER in paths.adapters else []
    return {
        "model": {"path": str(paths.base_model), "name": DEMO_MODEL_ID},
        "adapters": [{"name": n, "path": str(p)} for n, p in sorted(paths.adapters.items())],
        "engine": {"kind": "vllm", "max_model_len": 2048, "max_loras": 2, "memory_fraction": 0.2},
        "server": server,
        # One registry per demo kit, wherever the demo is started from.
        "registry": {
            "data_dir": str(paths.data_dir),
            "allowed_roots": [str(paths.adapter_root)] if paths.adapter_root else [],
        },
        "admin": {"keys": [keys.entry("admin")]},
        "metrics": {"enabled": True, "require_admin": True},
        "retrieval": retrieval,
        "prompts": PROMPTS,
        "tenants": {
            acme.name: {
                "keys": [keys.entry(acme.name)],
                "models": [DEMO_MODEL_ID, acme.adapter, *tools, embedder],
                "collections": [acme.collection],
                "default_model": acme.alias,
                "policy": {"max_tokens": MAX_TOKENS_CAP, "temperature": {"max": 1.5}},
                "aliases": {
                    acme.alias: {
                        "model": acme.adapter,
                        "policy": {
                            "prompts": ["acme-support@v1", "cite-sources@v1"],
                            "client_system": "drop",
                            "temperature": {"max": 1.0},
                            "rag": {"collections": [acme.collection], "top_k": 3},
                        },
                    }
                },
                "rate_limit": {"requests_per_minute": 120},
                "max_in_flight": 8,
            },
            globex.name: {
                "keys": [keys.entry(globex.name)],
                "models": [DEMO_MODEL_ID, globex.adapter, *tools, embedder],
                "collections": [globex.collection],
                "default_model": globex.alias,
                "policy": {"max_tokens": MAX_TOKENS_CAP},
                "aliases": {
                    globex.alias: {
                        "model": globex.adapter,
                        "policy": {
                            "system_prompt": GLOBEX_HELPDESK,
                            "client_system": "merge",
                            "rag": {"collections": [globex.collection], "top_k": 3},
                        },
                    }
                },
                "rate_limit": {"requests_per_minute": 60},
                "max_in_flight": 4,
            },
        },
    }


def write_demo_config(path: Path, config: dict[str, Any]) -> Settings:
    """Validate ``config``, write it to ``path`` atomically (it holds hashes only, so it
    may be read by others: ``loragate config check`` it, edit a copy), and return it.

    Serving from the file means ``kill -HUP`` and ``/admin/config/reload`` work.
    """
    settings = Settings.load(None, **config)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "# Written by `loragate demo` on every start; edits are overwritten.\n"
    text += yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return settings
