"""Safe extraction of uploaded or fetched adapter archives (``.zip``, ``.tar.gz``).

Nothing is handed to ``extractall``: members are walked one by one and each is refused
unless it is a plain file or folder whose name is relative, free of ``..``, NUL and
backslashes, and lands inside the destination (no zip-slip). Links, device files,
FIFOs, sparse and encrypted members are refused. The member count, each file's size
and the total unpacked bytes are bounded, counted on the bytes actually written (zip
headers can lie) and, for tar, on the decompressed stream itself (gzip bombs, huge
pax headers). The format comes from the file's magic bytes, not its name.
"""

from __future__ import annotations

import gzip
import io
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO

from adapters.errors import UnsafeArchiveError
from adapters.limits import AdapterLimits

CHUNK = 1024 * 1024
ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
GZIP_MAGIC = b"\x1f\x8b"
IGNORED_TOP = "__MACOSX"


def safe_relative_path(name: str) -> PurePosixPath:
    """Return ``name`` as a clean relative path, or raise ``UnsafeArchiveError``."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchiveError(f"Refused entry {name!r}: empty, NUL or backslash in the name.")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(
            f"Refused entry {name!r}: absolute paths are not allowed.", code="archive_absolute_path"
        )
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(
            f"Refused entry {name!r}: '..' would escape the destination.",
            code="archive_path_traversal",
        )
    if not parts:
        raise UnsafeArchiveError(f"Refused entry {name!r}: it names no file.")
    return PurePosixPath(*parts)


class _Extractor:
    """Writes members under ``dest`` while enforcing the limits; one per archive."""

    def __init__(self, dest: Path, limits: AdapterLimits) -> None:
        self.dest = dest.resolve()
        self.limits = limits
        self.members = 0
        self.total = 0

    def target(self, name: str) -> Path | None:
        self.members += 1
        if self.members > self.limits.max_files:
            raise UnsafeArchiveError(
                f"The archive has more than {self.limits.max_files} entries.",
                code="archive_too_many_files",
            )
        relative = safe_relative_path(name)
        if relative.parts[0] == IGNORED_TOP:
            return None
        target = self.dest.joinpath(*relative.parts)
        # Defence in depth against zip-slip: the resolved parent must stay inside dest.
        if not target.parent.resolve().is_relative_to(self.dest):
            raise UnsafeArchiveError(
                f"Refused entry {name!r}: it resolves outside the destination.",
                code="archive_path_traversal",
            )
        return target

    def folder(self, name: str) -> None:
        target = self.target(name)
        if target is not None:
            target.mkdir(parents=True, exist_ok=True)

    def file(self, name: str, source: IO[bytes]) -> None:
        target = self.target(name)
        if target is None:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            out = target.open("xb")  # exclusive: a duplicate name cannot overwrite
        except FileExistsError:
            raise UnsafeArchiveError(f"Refused entry {name!r}: duplicate name.") from None
        with out:
            written = 0
            while chunk := source.read(CHUNK):
                written += len(chunk)
                self.total += len(chunk)
                if written > self.limits.max_weights_bytes:
                    raise UnsafeArchiveError(
                        f"Entry {name!r} unpacks to more than {self.limits.max_weights_bytes} "
                        "bytes.",
                        code="archive_too_large",
                    )
                self._check_total()
                out.write(chunk)

    def _check_total(self) -> None:
        if self.total > self.limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"The archive unpacks to more than {self.limits.max_total_bytes} bytes.",
                code="archive_too_large",
            )


class _BoundedReader(io.RawIOBase):
    """Stops a decompressing stream once it has produced more than ``limit`` bytes."""

    def __init__(self, inner: IO[bytes] | gzip.GzipFile, limit: int) -> None:
        self.inner = inner
        self.limit = limit
        self.produced = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self.inner.read(len(buffer))
        self.produced += len(data)
        if self.produced > self.limit:
            raise UnsafeArchiveError(
                f"The archive decompresses to more than {self.limit} bytes.",
                code="archive_too_large",
            )
        buffer[: len(data)] = data
        return len(data)


def _extract_zip(archive: Path, extractor: _Extractor) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        if len(infos) > extractor.limits.max_files:
            raise UnsafeArchiveError(
                f"The archive has {len(infos)} entries; at most {extractor.limits.max_files}.",
                code="archive_too_many_files",
            )
        if sum(i.file_size for i in infos) > extractor.limits.max_total_bytes:
            raise UnsafeArchiveError(
                f"The archive declares more than {extractor.limits.max_total_bytes} bytes.",
                code="archive_too_large",
            )
        for info in infos:
            kind = stat.S_IFMT(info.external_attr >> 16)  # 0: no Unix type recorded
            if kind == stat.S_IFLNK:
                raise UnsafeArchiveError(
                    f"Refused entry {info.filename!r}: symbolic links are not allowed.",
                    code="archive_link",
                )
            if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
                raise UnsafeArchiveError(
                    f"Refused entry {info.filename!r}: not a regular file or folder.",
                    code="archive_special_file",
                )
            if info.flag_bits & 0x1:
                raise UnsafeArchiveError(f"Refused entry {info.filename!r}: it is encrypted.")
            if info.is_dir():
                extractor.folder(info.filename)
            else:
                with zf.open(info) as source:
                    extractor.file(info.filename, source)


def _tar_members(tf: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    while (member := tf.next()) is not None:
        yield member


def _extract_tar_gz(archive: Path, extractor: _Extractor) -> None:
    # Header bytes count too, so allow some room above the content limit.
    limit = extractor.limits.max_total_bytes + 512 * (2 * extractor.limits.max_files + 2) + CHUNK
    with gzip.open(archive, "rb") as gz:
        stream = io.BufferedReader(_BoundedReader(gz, limit), buffer_size=CHUNK)
        with tarfile.open(fileobj=stream, mode="r|") as tf:
            for member in _tar_members(tf):
                if member.issym() or member.islnk():
                    raise UnsafeArchiveError(
                        f"Refused entry {member.name!r}: links are not allowed.",
                        code="archive_link",
                    )
                if member.isdir():
                    extractor.folder(member.name)
                elif member.isfile() and not member.issparse():
                    source = tf.extractfile(member)
                    assert source is not None
                    extractor.file(member.name, source)
                else:
                    raise UnsafeArchiveError(
                        f"Refused entry {member.name!r}: not a regular file or folder.",
                        code="archive_special_file",
                    )


def extract_archive(archive: Path, dest: Path, limits: AdapterLimits) -> Path:
    """Unpack ``archive`` into the empty folder ``dest``; return the adapter's folder.

    The adapter's folder is ``dest`` itself, or its only sub-folder when the archive
    wraps everything in one top-level folder (``my-adapter/adapter_config.json``).
    """
    with archive.open("rb") as fh:
        magic = fh.read(4)
    extractor = _Extractor(dest, limits)
    try:
        if magic in ZIP_MAGIC:
            _extract_zip(archive, extractor)
        elif magic.startswith(GZIP_MAGIC):
            _extract_tar_gz(archive, extractor)
        else:
            raise UnsafeArchiveError(
                "Unsupported archive: upload a .zip or .tar.gz file.", code="unsupported_archive"
            )
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise UnsafeArchiveError(f"The archive is damaged: {exc}", code="invalid_archive") from None
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return dest
