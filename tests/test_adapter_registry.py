"""Registry lifecycle: versions, ids, activation, retirement, pins, restart, corruption."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.base_model import BaseModelSpec
from adapters.errors import (
    AdapterConflictError,
    AdapterNotFoundError,
    BaseModelMismatchError,
    RegistryCorruptError,
    RegistryError,
    RegistryLockedError,
)
from adapters.limits import AdapterLimits
from adapters.manifest import AdapterStatus, RegistryFile
from adapters.registry import AdapterRegistry
from adapters.sources import LocalDirectorySource
from adapters.validation import WEIGHTS_FILE
from tests.support.modelkit import tiny_llama_dir, write_random_adapter

LIMITS = AdapterLimits(max_lora_rank=16)


@pytest.fixture(scope="module")
def base() -> BaseModelSpec:
    return BaseModelSpec.from_directory(tiny_llama_dir(), name="tiny-base")


@pytest.fixture(scope="module")
def source_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("incoming")
    for seed in range(3):
        write_random_adapter(tiny_llama_dir(), root / f"a{seed}", seed=seed)
    return root


@pytest.fixture
def open_registry(tmp_path: Path, base: BaseModelSpec) -> Iterator[Callable[..., AdapterRegistry]]:
    opened: list[AdapterRegistry] = []

    def open_(spec: BaseModelSpec = base) -> AdapterRegistry:
        reg = AdapterRegistry.open(tmp_path / "data", spec, LIMITS)
        opened.append(reg)
        return reg

    yield open_
    for reg in opened:
        reg.close()


@pytest.fixture
def registry(open_registry: Callable[..., AdapterRegistry]) -> AdapterRegistry:
    return open_registry()


@pytest.fixture
def add(registry: AdapterRegistry, source_root: Path) -> Callable[..., Any]:
    def add_(name: str, seed: int = 0, **kwargs: Any) -> Any:
        source = LocalDirectorySource(source_root / f"a{seed}", [source_root])
        return registry.register(name, source, **kwargs)

    return add_


def statuses(registry: AdapterRegistry) -> dict[str, str]:
    return {e.ref: e.status.value for e in registry.entries()}


def test_versions_resolve_by_name_and_by_ref(registry, add):
    v1 = add("tone", seed=0)
    v2 = add("tone", seed=1)
    assert (v1.version, v2.version) == ("v1", "v2")
    assert registry.resolve("tone").ref == "tone@v1"  # the first version stays active
    assert registry.resolve("tone@v2").lora_int_id == v2.lora_int_id  # inactive, pinned by ref
    assert statuses(registry) == {"tone@v1": "active", "tone@v2": "inactive"}
    assert v1.sha256 != v2.sha256


def test_register_with_activate_true_switches_active(registry, add):
    add("tone", seed=0)
    add("tone", seed=1, version="2025-01", activate=True)
    assert registry.resolve("tone").version == "2025-01"
    assert statuses(registry) == {"tone@v1": "inactive", "tone@2025-01": "active"}


def test_activate_is_atomic_and_persisted(registry, add, open_registry):
    add("tone", seed=0)
    add("tone", seed=1)
    assert registry.activate("tone", "v2").status is AdapterStatus.ACTIVE
    assert registry.activate("tone", "v2").status is AdapterStatus.ACTIVE  # idempotent
    assert statuses(registry) == {"tone@v1": "inactive", "tone@v2": "active"}
    registry.close()
    assert open_registry().resolve("tone").version == "v2"


def test_failed_write_changes_nothing(registry, add, monkeypatch):
    add("tone", seed=0)
    add("tone", seed=1)

    def broken_save(self, state):
        raise OSError("disk full")

    monkeypatch.setattr(RegistryFile, "save", broken_save)
    with pytest.raises(OSError):
        registry.activate("tone", "v2")
    with pytest.raises(OSError):
        add("tone", seed=2)
    assert registry.resolve("tone").version == "v1"
    assert sorted(p.name for p in (registry.data_dir / "adapters" / "tone").iterdir()) == [
        "v1",
        "v2",
    ]


def test_ids_unique_across_versions_and_never_reused(registry, add):
    ids = [add("tone", seed=0).lora_int_id, add("tone", seed=1).lora_int_id]
    ids.append(add("style", seed=2).lora_int_id)
    registry.retire("tone", "v2", purge=True)
    registry.retire("style")
    registry.remove("style", "v1")
    later = add("tone", seed=1)
    assert ids == [1, 2, 3]
    assert later.lora_int_id == 4
    assert later.version == "v3"  # v2 was removed, but versions are never reused either
    with pytest.raises(AdapterConflictError) as caught:
        add("tone", seed=1, version="v2")
    assert (caught.value.status_code, caught.value.code) == (409, "adapter_version_exists")


def test_duplicate_version_is_a_conflict(registry, add):
    add("tone", version="v7")
    with pytest.raises(AdapterConflictError):
        add("tone", version="v7")


def test_base_model_name_is_reserved(registry, add):
    with pytest.raises(AdapterConflictError, match="base model"):
        add("tiny-base")


def test_resolve_errors(registry, add):
    add("tone")
    for model in ["nope", "tone@v9", "Not A Name", "tone@"]:
        with pytest.raises(AdapterNotFoundError) as caught:
            registry.resolve(model)
        assert (caught.value.status_code, caught.value.code, caught.value.param) == (
            404,
            "model_not_found",
            "model",
        )


def test_retire_stops_serving_and_remove_deletes_files(registry, add):
    entry = add("tone")
    assert [e.status for e in registry.retire("tone", "v1")] == [AdapterStatus.RETIRING]
    with pytest.raises(AdapterNotFoundError, match="no active version"):
        registry.resolve("tone")
    with pytest.raises(AdapterNotFoundError, match="retiring"):
        registry.resolve("tone@v1")
    with pytest.raises(AdapterConflictError):
        registry.activate("tone", "v1")
    assert entry.path.is_dir()  # files stay while the engine drains
    registry.remove("tone", "v1")
    assert not entry.path.exists()
    assert registry.entries() == []


def test_remove_requires_retiring(registry, add):
    add("tone")
    with pytest.raises(AdapterConflictError) as caught:
        registry.remove("tone", "v1")
    assert caught.value.code == "adapter_not_retired"


def test_retire_all_versions_with_purge(registry, add):
    a, b = add("tone", seed=0), add("tone", seed=1)
    add("other")
    assert {e.ref for e in registry.retire("tone", purge=True)} == {a.ref, b.ref}
    assert not (registry.data_dir / "adapters" / "tone").exists()
    assert [e.ref for e in registry.entries()] == ["other@v1"]
    with pytest.raises(AdapterNotFoundError):
        registry.retire("tone")


def test_pinned_adapters_refuse_retirement(registry, add):
    add("tone")
    assert registry.pin("tone").pinned is True
    with pytest.raises(AdapterConflictError) as caught:
        registry.retire("tone")
    assert (caught.value.status_code, caught.value.code) == (409, "adapter_pinned")
    assert registry.resolve("tone").pinned is True
    assert registry.unpin("tone", "v1").pinned is False
    registry.retire("tone")


def test_restart_restores_entries_active_versions_and_counter(
    registry, add, open_registry, source_root
):
    add("tone", seed=0)
    add("tone", seed=1, activate=True)
    add("style", seed=2, pinned=True)
    before = registry.entries()
    registry.close()
    with pytest.raises(RegistryError):
        registry.pin("tone")  # a closed registry refuses mutations
    reopened = open_registry()
    assert reopened.entries() == before
    assert reopened.resolve("tone").version == "v2"
    assert reopened.resolve("style").pinned
    new = reopened.register("style", LocalDirectorySource(source_root / "a0", [source_root]))
    assert (new.lora_int_id, new.version) == (4, "v2")


def test_second_registry_on_same_folder_is_refused(registry, open_registry):
    with pytest.raises(RegistryLockedError):
        open_registry()
    registry.close()
    open_registry()


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # truncated JSON
        lambda raw: b"\x00\xff garbage",
        lambda raw: raw.replace(b'"lora_int_id": 2', b'"lora_int_id": 1'),  # duplicate ids
        lambda raw: raw.replace(b'"next_lora_int_id": 3', b'"next_lora_int_id": 2'),
        lambda raw: raw.replace(b'"status": "inactive"', b'"status": "active"'),  # two active
        lambda raw: raw.replace(b'"name": "tone"', b'"name": "../../etc"', 1),
    ],
)
def test_corrupt_registry_file_is_reported_and_left_untouched(registry, add, open_registry, damage):
    add("tone", seed=0)
    add("tone", seed=1)
    registry.close()
    path = registry.data_dir / "registry.json"
    damaged = damage(path.read_bytes())
    assert damaged != path.read_bytes()
    path.write_bytes(damaged)
    with pytest.raises(RegistryCorruptError) as caught:
        open_registry()
    assert caught.value.status_code == 500
    assert path.read_bytes() == damaged
    assert (registry.data_dir / "adapters" / "tone" / "v1").is_dir()  # no clean-up either
    assert not list(registry.data_dir.glob(".registry.json.*"))


def test_orphans_and_staging_leftovers_are_cleaned_on_open(registry, add, open_registry):
    add("tone")
    registry.close()
    ghost = registry.data_dir / "adapters" / "ghost" / "v1"
    ghost.mkdir(parents=True)
    (registry.data_dir / "staging" / "work-crashed").mkdir()
    reopened = open_registry()
    assert not ghost.exists()
    assert list((reopened.data_dir / "staging").iterdir()) == []
    assert reopened.resolve("tone").path.is_dir()


def test_entries_validated_on_another_base_are_not_served(registry, add, base, open_registry):
    add("tone")
    registry.close()
    shapes = dict(base.weight_shapes)
    shapes["model.layers.0.self_attn.q_proj"] = (256, 128)
    other = dataclasses.replace(base, weight_shapes=shapes)
    with pytest.raises(BaseModelMismatchError) as caught:
        open_registry(other).resolve("tone")
    assert (caught.value.status_code, caught.value.param) == (422, "model")


def test_verify_detects_tampered_copies(registry, add):
    entry = add("tone")
    assert registry.verify() == []
    (entry.path / WEIGHTS_FILE).write_bytes(b"tampered")
    assert registry.verify() == ["tone@v1: adapter_model.safetensors does not match its sha256"]


def test_registry_file_is_plain_json_with_the_counter(registry, add):
    add("tone")
    data = json.loads((registry.data_dir / "registry.json").read_text())
    assert data["next_lora_int_id"] == 2
    assert data["entries"][0]["sha256"] == registry.resolve("tone").sha256


def test_concurrent_registrations_and_reads(registry, source_root, open_registry):
    errors: list[BaseException] = []
    names = [f"n{i % 3}" for i in range(12)]
    start = threading.Barrier(len(names) + 1)

    def register(name: str, seed: int) -> None:
        try:
            start.wait()
            source = LocalDirectorySource(source_root / f"a{seed}", [source_root])
            registry.register(name, source, activate=True)
        except BaseException as exc:  # noqa: BLE001 (asserted in the main thread)
            errors.append(exc)

    def read() -> None:
        try:
            start.wait()
            for _ in range(200):
                for entry in registry.entries():
                    assert registry.resolve(entry.name).status is AdapterStatus.ACTIVE
        except BaseException as exc:  # noqa: BLE001 (asserted in the main thread)
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(n, i % 3)) for i, n in enumerate(names)]
    reader = threading.Thread(target=read)
    for thread in [*threads, reader]:
        thread.start()
    for thread in [*threads, reader]:
        thread.join()
    assert errors == []
    entries = registry.entries()
    assert sorted(e.lora_int_id for e in entries) == list(range(1, 13))
    assert len({e.ref for e in entries}) == 12
    for name in {"n0", "n1", "n2"}:
        assert sum(e.status is AdapterStatus.ACTIVE for e in entries if e.name == name) == 1
    registry.close()
    assert open_registry().entries() == entries
