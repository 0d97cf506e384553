"""Uploaded archives: good ones register; every extraction attack is refused, nothing lands."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from adapters.archive import extract_archive
from adapters.base_model import BaseModelSpec
from adapters.errors import AdapterError, UnsafeArchiveError, UnsafeWeightsFormatError
from adapters.limits import AdapterLimits
from adapters.registry import AdapterRegistry
from adapters.sources import ArchiveSource
from adapters.validation import CONFIG_FILE, WEIGHTS_FILE
from tests.support.modelkit import tiny_llama_dir, write_random_adapter

MiB = 1024 * 1024
LIMITS = AdapterLimits(
    max_lora_rank=16,
    max_files=8,
    max_weights_bytes=1 * MiB,
    max_total_bytes=2 * MiB,
    max_archive_bytes=3 * MiB,
)


@pytest.fixture(scope="module")
def adapter_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    folder = write_random_adapter(tiny_llama_dir(), tmp_path_factory.mktemp("a"), seed=3)
    return {name: (folder / name).read_bytes() for name in (CONFIG_FILE, WEIGHTS_FILE)}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[AdapterRegistry]:
    base = BaseModelSpec.from_directory(tiny_llama_dir(), name="tiny-base")
    with AdapterRegistry.open(tmp_path / "data", base, LIMITS) as reg:
        yield reg


def make_zip(entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buffer.getvalue()


def make_tar_gz(build: Callable[[tarfile.TarFile], None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        build(tf)
    return buffer.getvalue()


def add_file(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def add_special(tf: tarfile.TarFile, name: str, kind: bytes, linkname: str = "") -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    tf.addfile(info)


def upload(registry: AdapterRegistry, data: bytes, filename: str = "a.zip"):
    return registry.register("up", ArchiveSource(io.BytesIO(data), filename))


def assert_refused(
    registry: AdapterRegistry,
    data: bytes,
    code: str,
    error: type[AdapterError] = UnsafeArchiveError,
    status: int = 400,
    param: str = "file",
) -> None:
    with pytest.raises(error) as caught:
        upload(registry, data)
    exc = caught.value
    assert (exc.status_code, exc.code, exc.param) == (status, code, param), exc.message
    assert list((registry.data_dir / "adapters").rglob("*")) == []
    assert list((registry.data_dir / "staging").iterdir()) == []
    assert registry.entries() == []


def test_zip_upload_registers(registry, adapter_files):
    entry = upload(registry, make_zip(list(adapter_files.items())))
    assert entry.source == "upload:a.zip"
    assert (entry.path / WEIGHTS_FILE).read_bytes() == adapter_files[WEIGHTS_FILE]


def test_tar_gz_with_one_top_folder_registers(registry, adapter_files):
    def build(tf: tarfile.TarFile) -> None:
        add_special(tf, "my-adapter", tarfile.DIRTYPE)
        for name, data in adapter_files.items():
            add_file(tf, f"my-adapter/{name}", data)

    entry = upload(registry, make_tar_gz(build), filename="my-adapter.tar.gz")
    assert entry.rank == 8 and entry.path.is_dir()


@pytest.mark.parametrize("evil", ["../evil.txt", "adapter/../../evil.txt", "a/../../../../evil"])
def test_zip_slip(registry, adapter_files, evil):
    data = make_zip([*adapter_files.items(), (zipfile.ZipInfo(evil), b"owned")])
    assert_refused(registry, data, "archive_path_traversal")
    assert not any(registry.data_dir.parent.rglob("evil*"))


def test_zip_slip_never_writes_outside_destination(tmp_path, adapter_files):
    archive = tmp_path / "in.zip"
    archive.write_bytes(make_zip([(zipfile.ZipInfo("../../outside.txt"), b"owned")]))
    dest = tmp_path / "deep" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(UnsafeArchiveError):
        extract_archive(archive, dest, LIMITS)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "dest", "in.zip"]


@pytest.mark.parametrize("name", ["/tmp/evil.txt", "/adapter_config.json", "C:/evil.txt"])
def test_zip_absolute_path(registry, adapter_files, name):
    data = make_zip([*adapter_files.items(), (zipfile.ZipInfo(name), b"owned")])
    assert_refused(registry, data, "archive_absolute_path")


def test_zip_backslash_names(registry, adapter_files):
    data = make_zip([*adapter_files.items(), (zipfile.ZipInfo("..\\evil.txt"), b"owned")])
    assert_refused(registry, data, "unsafe_archive")


def test_zip_symlink(registry, adapter_files):
    link = zipfile.ZipInfo("notes.txt")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    data = make_zip([*adapter_files.items(), (link, b"/etc/passwd")])
    assert_refused(registry, data, "archive_link")


def test_zip_device_entry(registry, adapter_files):
    device = zipfile.ZipInfo("dev")
    device.external_attr = (stat.S_IFCHR | 0o600) << 16
    assert_refused(
        registry, make_zip([*adapter_files.items(), (device, b"")]), "archive_special_file"
    )


def test_zip_duplicate_names(registry, adapter_files):
    entries = [*adapter_files.items(), (CONFIG_FILE, b"{}")]
    with pytest.warns(UserWarning, match="Duplicate name"):
        data = make_zip(entries)
    assert_refused(registry, data, "unsafe_archive")


@pytest.mark.parametrize(
    ("kind", "linkname"),
    [(tarfile.SYMTYPE, "/etc/passwd"), (tarfile.SYMTYPE, "../.."), (tarfile.LNKTYPE, "x")],
)
def test_tar_links(registry, adapter_files, kind, linkname):
    def build(tf: tarfile.TarFile) -> None:
        add_special(tf, "adapter_model.safetensors", kind, linkname)
        add_file(tf, CONFIG_FILE, adapter_files[CONFIG_FILE])

    assert_refused(registry, make_tar_gz(build), "archive_link")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_device_and_fifo(registry, adapter_files, kind):
    def build(tf: tarfile.TarFile) -> None:
        for name, data in adapter_files.items():
            add_file(tf, name, data)
        add_special(tf, "zero", kind)

    assert_refused(registry, make_tar_gz(build), "archive_special_file")


@pytest.mark.parametrize(
    ("name", "code"),
    [("/etc/cron.d/evil", "archive_absolute_path"), ("../evil", "archive_path_traversal")],
)
def test_tar_escaping_names(registry, adapter_files, name, code):
    def build(tf: tarfile.TarFile) -> None:
        for member, data in adapter_files.items():
            add_file(tf, member, data)
        add_file(tf, name, b"owned")

    assert_refused(registry, make_tar_gz(build), code)


def test_too_many_files(registry, adapter_files):
    extra = [(f"n{i}.txt", b"x") for i in range(LIMITS.max_files)]
    assert_refused(registry, make_zip([*adapter_files.items(), *extra]), "archive_too_many_files")

    def build(tf: tarfile.TarFile) -> None:
        for name, data in [*adapter_files.items(), *extra]:
            add_file(tf, name, data)

    assert_refused(registry, make_tar_gz(build), "archive_too_many_files")


def test_zip_bomb(registry, adapter_files):
    bomb = [(f"zeros{i}", b"\0" * (LIMITS.max_weights_bytes - 1)) for i in range(3)]
    data = make_zip([*adapter_files.items(), *bomb])
    assert len(data) < 100_000  # tiny compressed, 3 MiB unpacked
    assert_refused(registry, data, "archive_too_large")


def test_tar_gz_bomb(registry, adapter_files):
    def build(tf: tarfile.TarFile) -> None:
        for name, data in adapter_files.items():
            add_file(tf, name, data)
        add_file(tf, "zeros", b"\0" * (3 * MiB))

    data = make_tar_gz(build)
    assert len(data) < 100_000
    assert_refused(registry, data, "archive_too_large")


def test_total_unpacked_size_is_bounded_not_only_each_file(registry, adapter_files):
    def build(tf: tarfile.TarFile) -> None:
        for name, data in adapter_files.items():
            add_file(tf, name, data)
        for i in range(2):  # each under the per-file limit, together above the total
            add_file(tf, f"part{i}", b"\0" * (LIMITS.max_weights_bytes - 1024))

    assert_refused(registry, make_tar_gz(build), "archive_too_large")


def test_upload_above_archive_limit(registry):
    assert_refused(registry, b"PK\x03\x04" + b"\0" * (3 * MiB), "archive_too_large")


@pytest.mark.parametrize("data", [b"just some text", b"\x80\x04\x95pickle"])
def test_not_an_archive(registry, data):
    assert_refused(registry, data, "unsupported_archive")


def test_damaged_archive(registry, adapter_files):
    data = make_zip(list(adapter_files.items()))
    assert_refused(registry, data[: len(data) // 2], "invalid_archive")


def test_pickle_inside_archive_is_refused_by_validation(registry, adapter_files):
    data = make_zip([*adapter_files.items(), ("adapter_model.bin", b"\x80\x04")])
    assert_refused(
        registry, data, "unsafe_weights_format", UnsafeWeightsFormatError, 422, "adapter"
    )
