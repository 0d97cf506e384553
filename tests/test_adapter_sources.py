"""Adapter sources: allowed local roots (and symlinks), fsspec ``memory://`` and ``file://``."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import fsspec
import pytest

from adapters.base_model import BaseModelSpec
from adapters.errors import (
    AdapterError,
    SourceNotAllowedError,
    SourceUnavailableError,
    UnsafeArchiveError,
)
from adapters.limits import AdapterLimits
from adapters.registry import AdapterRegistry
from adapters.sources import AdapterSource, FsspecSource, LocalDirectorySource
from adapters.validation import CONFIG_FILE, WEIGHTS_FILE
from tests.support.modelkit import tiny_llama_dir, write_random_adapter

LIMITS = AdapterLimits(max_lora_rank=16, max_files=6)
MEMORY = {"memory"}  # not a default protocol: tests opt in


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[AdapterRegistry]:
    base = BaseModelSpec.from_directory(tiny_llama_dir(), name="tiny-base")
    with AdapterRegistry.open(tmp_path / "data", base, LIMITS) as reg:
        yield reg


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """(allowed root holding a valid adapter at allowed/a, a folder outside any root)."""
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    write_random_adapter(tiny_llama_dir(), allowed / "a", seed=5)
    write_random_adapter(tiny_llama_dir(), outside / "b", seed=6)
    return allowed, outside


@pytest.fixture
def memory_dir() -> Iterator[str]:
    """A unique memory:// folder, removed afterwards (the memory filesystem is global)."""
    uri = f"memory://adapters-{uuid.uuid4().hex}"
    yield uri
    fs = fsspec.filesystem("memory")
    if fs.exists(uri):
        fs.rm(uri, recursive=True)


def upload_to_memory(uri: str, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        with fsspec.open(f"{uri}/{name}", "wb") as fh:
            fh.write(data)


def adapter_files(folder: Path) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in (CONFIG_FILE, WEIGHTS_FILE)}


def assert_refused(
    registry: AdapterRegistry, source: AdapterSource, error: type[AdapterError], code: str
) -> None:
    with pytest.raises(error) as caught:
        registry.register("src", source)
    exc = caught.value
    assert (exc.status_code, exc.code, exc.param) == (400, code, "source"), exc.message
    assert list((registry.data_dir / "adapters").rglob("*")) == []
    assert registry.entries() == []


def test_local_folder_under_a_root(registry, roots):
    allowed, _ = roots
    entry = registry.register("src", LocalDirectorySource(allowed / "a", [allowed]))
    assert entry.source == f"local:{allowed / 'a'}"


def test_local_folder_outside_the_roots(registry, roots):
    allowed, outside = roots
    source = LocalDirectorySource(outside / "b", [allowed])
    assert_refused(registry, source, SourceNotAllowedError, "source_not_allowed")


def test_empty_folder_outside_the_roots(registry, roots, tmp_path):
    allowed, _ = roots
    (tmp_path / "empty").mkdir()
    source = LocalDirectorySource(tmp_path / "empty", [allowed])
    assert_refused(registry, source, SourceNotAllowedError, "source_not_allowed")


def test_dotdot_cannot_leave_the_root(registry, roots):
    allowed, _ = roots
    source = LocalDirectorySource(allowed / ".." / "outside" / "b", [allowed])
    assert_refused(registry, source, SourceNotAllowedError, "source_not_allowed")


def test_symlinked_folder_pointing_outside(registry, roots):
    allowed, outside = roots
    (allowed / "sneaky").symlink_to(outside / "b")
    source = LocalDirectorySource(allowed / "sneaky", [allowed])
    assert_refused(registry, source, SourceNotAllowedError, "source_not_allowed")


def test_symlinked_file_inside_the_folder_pointing_outside(registry, roots):
    allowed, outside = roots
    (allowed / "a" / WEIGHTS_FILE).unlink()
    (allowed / "a" / WEIGHTS_FILE).symlink_to(outside / "b" / WEIGHTS_FILE)
    source = LocalDirectorySource(allowed / "a", [allowed])
    assert_refused(registry, source, SourceNotAllowedError, "source_not_allowed")


def test_symlinks_that_stay_inside_are_followed(registry, roots):
    allowed, _ = roots
    (allowed / "alias").symlink_to(allowed / "a")
    entry = registry.register("src", LocalDirectorySource(allowed / "alias", [allowed]))
    assert (entry.path / WEIGHTS_FILE).read_bytes() == (allowed / "a" / WEIGHTS_FILE).read_bytes()
    assert not (entry.path / WEIGHTS_FILE).is_symlink()


def test_missing_folder_and_no_roots(registry, roots):
    allowed, _ = roots
    missing = LocalDirectorySource(allowed / "nope", [allowed])
    assert_refused(registry, missing, SourceUnavailableError, "source_unavailable")
    no_roots = LocalDirectorySource(allowed / "a", [])
    assert_refused(registry, no_roots, SourceNotAllowedError, "source_not_allowed")


def test_memory_uri_folder(registry, roots, memory_dir):
    allowed, _ = roots
    upload_to_memory(memory_dir, {**adapter_files(allowed / "a"), "sub/README.md": b"hi"})
    entry = registry.register("src", FsspecSource(memory_dir, allowed_protocols=MEMORY))
    assert entry.source == f"uri:{memory_dir}"
    assert entry.sha256 == registry.resolve("src").sha256
    assert (entry.path / WEIGHTS_FILE).read_bytes() == (allowed / "a" / WEIGHTS_FILE).read_bytes()


def test_memory_uri_archive(registry, roots, memory_dir):
    allowed, _ = roots
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in adapter_files(allowed / "a").items():
            zf.writestr(f"pkg/{name}", data)
    upload_to_memory(memory_dir, {"adapter.zip": buffer.getvalue()})
    entry = registry.register(
        "src", FsspecSource(f"{memory_dir}/adapter.zip", allowed_protocols=MEMORY)
    )
    assert entry.rank == 8


def test_memory_uri_missing(registry, memory_dir):
    assert_refused(
        registry,
        FsspecSource(memory_dir, allowed_protocols=MEMORY),
        SourceUnavailableError,
        "source_unavailable",
    )


def test_memory_uri_with_too_many_files(registry, roots, memory_dir):
    allowed, _ = roots
    extra = {f"n{i}.txt": b"x" for i in range(LIMITS.max_files)}
    upload_to_memory(memory_dir, {**adapter_files(allowed / "a"), **extra})
    source = FsspecSource(memory_dir, allowed_protocols=MEMORY)
    assert_refused(registry, source, UnsafeArchiveError, "source_too_many_files")


def test_memory_uri_pickle_is_refused(registry, roots, memory_dir):
    allowed, _ = roots
    upload_to_memory(memory_dir, {**adapter_files(allowed / "a"), "adapter_model.bin": b"\x80"})
    with pytest.raises(AdapterError) as caught:
        registry.register("src", FsspecSource(memory_dir, allowed_protocols=MEMORY))
    assert (caught.value.status_code, caught.value.code) == (422, "unsafe_weights_format")


def test_file_uri_under_a_root(registry, roots):
    allowed, _ = roots
    source = FsspecSource(
        f"file://{allowed / 'a'}", allowed_protocols={"file"}, allowed_roots=[allowed]
    )
    assert registry.register("src", source).rank == 8


def test_file_uri_outside_the_roots(registry, roots):
    allowed, outside = roots
    source = FsspecSource(
        f"file://{outside / 'b'}", allowed_protocols={"file"}, allowed_roots=[allowed]
    )
    assert_refused(registry, source, SourceNotAllowedError, "source_not_allowed")


@pytest.mark.parametrize("uri", ["file:///etc", "/etc", "ftp://host/x", "ssh://host/x"])
def test_protocols_not_allowed_by_default(registry, uri):
    assert_refused(registry, FsspecSource(uri), SourceNotAllowedError, "source_not_allowed")


def test_description_hides_credentials():
    source = FsspecSource("https://user:secret@example.com/a.zip?token=abc")
    assert source.describe() == "uri:https://example.com/a.zip"
