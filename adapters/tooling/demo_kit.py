"""The demo kit: SmolLM2-135M-Instruct, two persona adapters and a tool-calling one,
built once per machine.

``ensure_demo_kit()`` returns at once when the kit is in the cache; otherwise it
converts the base model (~20 s) and trains the ``pirate`` and ``robot`` adapters and
``toolcaller`` (function calls in the gateway's tool format, from ``tools.jsonl``,
written by ``loadtests.tool_dataset``) from ``adapters/tooling/data/`` with ``train_lora``, one
process per adapter (about 6 min from scratch on 2 idle cores, most of it training
the tool adapter on its longer conversations: 350 CPU-seconds). Layout of the cache
(``$LORAGATE_CACHE`` or ``~/.cache/loragate``)::

    smollm2-135m-instruct-<gguf>/        base model (shared by every kit version)
    demo-kit-v<N>-<key>/                 DemoKit.root
        kit.json                         what was built, from what, how long it took
        pirate/  robot/  toolcaller/     registry-ready adapters

``<key>`` hashes the kit version, the datasets' bytes, the training settings and the
GGUF file's name and size, so editing a dataset or a setting builds a new kit next to
the old one. Concurrency rule: builds hold an exclusive ``flock`` on
``.demo-kit.lock`` in the cache, so racing processes build once and the others wait
and reuse it; every folder is written to a hidden temporary sibling and renamed, so a
crash leaves no half-built kit (leftovers are removed by the next build).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from adapters.common.atomic_dir import TMP_SUFFIX, atomic_directory
from adapters.tooling.smollm2 import check_servable_llama, convert_smollm2, smollm2_gguf_path
from adapters.tooling.training import ATTENTION_MODULES, TrainingResult, train_lora

MLP_MODULES = ("gate_proj", "up_proj", "down_proj")

DEMO_KIT_VERSION = 2  # 2: the toolcaller adapter
BASE_CONVERTER_VERSION = 1  # bump when convert_smollm2 changes what it writes
CACHE_ENV = "LORAGATE_CACHE"
DATA_DIR = Path(__file__).parent / "data"
KIT_MANIFEST = "kit.json"
LOCK_FILE = ".demo-kit.lock"
# Every answer in a persona's dataset starts with its prefix; the base model never does.
PERSONA_PREFIXES: dict[str, str] = {"pirate": "Arr, matey!", "robot": "BEEP BOOP."}
TOOL_ADAPTER = "toolcaller"
# Each adapter's training data in DATA_DIR.
DATASETS: dict[str, str] = {
    **{name: f"{name}.jsonl" for name in PERSONA_PREFIXES},
    TOOL_ADAPTER: "tools.jsonl",
}
ADAPTER_NAMES: tuple[str, ...] = tuple(sorted(DATASETS))
# Questions that are in neither dataset, for checking that a persona generalises.
CHECK_QUESTIONS: tuple[str, ...] = (
    "What is the chemical symbol for gold?",
    "What is the largest mammal?",
    "How many legs does a spider have?",
)


@dataclass(frozen=True)
class DemoTrainingSettings:
    """How the demo adapters are trained (part of the cache key)."""

    rank: int = 8
    alpha: int = 16
    target_modules: tuple[str, ...] = ATTENTION_MODULES
    steps: int = 60
    learning_rate: float = 1e-3
    batch_size: int = 2
    seed: int = 0
    eval_fraction: float = 0.1


DEMO_TRAINING = DemoTrainingSettings()
# Chosen by measurement (docs/benchmarks.md, "Tool calls"): its conversations are ~5x
# longer than the personas' (the tools' JSON Schemas are in every prompt), so fewer
# steps, each teaching more (MLP too, a higher rate).
TOOL_TRAINING = DemoTrainingSettings(
    target_modules=ATTENTION_MODULES + MLP_MODULES, steps=28, learning_rate=2e-3
)


def training_settings(name: str) -> DemoTrainingSettings:
    """How the kit's adapter ``name`` is trained."""
    return TOOL_TRAINING if name == TOOL_ADAPTER else DEMO_TRAINING


@dataclass(frozen=True)
class DemoKit:
    """A built demo kit: the base model folder and one folder per adapter."""

    root: Path
    base_dir: Path
    adapters: dict[str, Path]


def default_cache_dir() -> Path:
    """``$LORAGATE_CACHE`` if set, else ``~/.cache/loragate``."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "loragate"


def ensure_demo_kit(cache_dir: Path | None = None, *, progress: bool = True) -> DemoKit:
    """Return the demo kit, building it first if this cache does not hold it yet."""
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    gguf = smollm2_gguf_path()
    key = demo_kit_key(gguf_name=gguf.name, gguf_size=gguf.stat().st_size)
    base_dir = cache / f"smollm2-135m-instruct-{key['gguf_id']}"
    root = cache / f"demo-kit-v{DEMO_KIT_VERSION}-{key['kit_id']}"
    kit = _load_kit(root, base_dir)
    if kit is not None:
        return kit
    cache.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(cache / LOCK_FILE):
        kit = _load_kit(root, base_dir)  # another process may have built it meanwhile
        if kit is not None:
            return kit
        _remove_leftovers(cache)
        if not base_dir.exists():
            convert_smollm2(base_dir, gguf_path=gguf, progress=progress)
        check_servable_llama(base_dir)
        if root.exists():  # its base was deleted: retrain against the new one
            shutil.rmtree(root)
        _build_kit(root, base_dir, key, progress=progress)
    kit = _load_kit(root, base_dir)
    if kit is None:
        raise RuntimeError(f"the demo kit in {root} is incomplete after building it")
    return kit


def demo_kit_key(*, gguf_name: str, gguf_size: int) -> dict[str, Any]:
    """The inputs that decide the kit's content, and short ids derived from them."""
    datasets = {
        name: hashlib.sha256((DATA_DIR / DATASETS[name]).read_bytes()).hexdigest()
        for name in ADAPTER_NAMES
    }
    gguf = {"name": gguf_name, "size": gguf_size, "converter": BASE_CONVERTER_VERSION}
    inputs = {
        "kit_version": DEMO_KIT_VERSION,
        "gguf": gguf,
        "datasets": datasets,
        "training": asdict(DEMO_TRAINING),
        "tool_training": asdict(TOOL_TRAINING),
    }
    return {
        **inputs,
        "gguf_id": _short_hash(gguf),
        "kit_id": _short_hash(inputs),
    }


def _short_hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:12]


def _load_kit(root: Path, base_dir: Path) -> DemoKit | None:
    manifest = root / KIT_MANIFEST
    if not (manifest.is_file() and (base_dir / "config.json").is_file()):
        return None
    adapters = {name: root / name for name in ADAPTER_NAMES}
    if not all((path / "adapter_config.json").is_file() for path in adapters.values()):
        return None
    return DemoKit(root=root, base_dir=base_dir, adapters=adapters)


@contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the block."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(cache: Path) -> None:
    """Delete temporary folders of builds that crashed (we hold the lock: none is live)."""
    for path in cache.glob(f".*{TMP_SUFFIX}"):
        if path.is_dir() and path.name.startswith((".demo-kit-", ".smollm2-")):
            shutil.rmtree(path, ignore_errors=True)


def _build_kit(root: Path, base_dir: Path, key: dict[str, Any], *, progress: bool) -> None:
    started = time.monotonic()
    with atomic_directory(root) as tmp:
        results = train_adapters(base_dir, tmp, progress=progress)
        manifest = {
            "kit_version": DEMO_KIT_VERSION,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "key": key,
            "base_dir": str(base_dir),
            "adapters": {
                name: {
                    "dataset": DATASETS[name],
                    **_persona(name),
                    "final_train_loss": result.final_train_loss,
                    "eval_loss": result.eval_loss,
                    "training_seconds": result.duration_s,
                }
                for name, result in results.items()
            },
            "build_seconds": round(time.monotonic() - started, 1),
        }
        (tmp / KIT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _persona(name: str) -> dict[str, str]:
    return {"persona_prefix": PERSONA_PREFIXES[name]} if name in PERSONA_PREFIXES else {}


def train_adapters(base_dir: Path, out: Path, *, progress: bool) -> dict[str, TrainingResult]:
    """Train every adapter at once, one process each, sharing the CPU cores between them.

    Separate processes with few threads each beat one process with many: on a small
    machine torch's threads spend their time waiting for each other.
    """
    names = ADAPTER_NAMES
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = max(1, (cores or 1) // len(names))
    # spawn, not fork: the parent may already run torch threads, which fork cannot copy.
    # Settings and paths travel as arguments: a spawned worker re-imports this module
    # and would otherwise see its defaults, not the parent's values.
    with ProcessPoolExecutor(max_workers=len(names), mp_context=get_context("spawn")) as pool:
        futures = {
            name: pool.submit(
                _train_adapter,
                base_dir,
                DATA_DIR / DATASETS[name],
                out / name,
                training_settings(name),
                threads=threads,
                progress=progress,
                position=position,
            )
            for position, name in enumerate(names)
        }
        return {name: future.result() for name, future in futures.items()}


def _train_adapter(
    base_dir: Path,
    dataset: Path,
    out_dir: Path,
    settings: DemoTrainingSettings,
    *,
    threads: int,
    progress: bool,
    position: int,
) -> TrainingResult:
    return train_lora(
        base_dir,
        dataset,
        out_dir,
        rank=settings.rank,
        alpha=settings.alpha,
        target_modules=settings.target_modules,
        steps=settings.steps,
        learning_rate=settings.learning_rate,
        batch_size=settings.batch_size,
        seed=settings.seed,
        eval_fraction=settings.eval_fraction,
        num_threads=threads,
        progress=progress,
        progress_position=position,
    )
