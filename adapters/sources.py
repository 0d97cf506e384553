"""Where adapters come from: a local folder, an uploaded archive, or an fsspec URI.

Every source implements ``AdapterSource``: ``materialize(workdir, limits)`` returns a
local folder holding the adapter's files, using ``workdir`` (an empty private folder
the registry creates and deletes) for anything it has to download or unpack. Sources
only fetch, within the limits; ``AdapterValidator`` judges the files afterwards.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Iterable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import fsspec

from adapters.archive import CHUNK, extract_archive, safe_relative_path
from adapters.common.credential_redaction import redact_credentials, redact_uri
from adapters.errors import (
    InvalidSourceUriError,
    SourceNotAllowedError,
    SourceUnavailableError,
    UnsafeArchiveError,
)
from adapters.limits import AdapterLimits

if TYPE_CHECKING:
    from adapters.public_hosts import HostGuard

LOCAL_PROTOCOLS = frozenset({"file", "local"})
HTTP_PROTOCOLS = frozenset({"http", "https"})
DEFAULT_PROTOCOLS = frozenset({"s3", "gs", "gcs", "az", "abfs", "hf", "https"})
"""Remote stores only. ``memory`` is process-wide scratch space (whatever anyone wrote
there becomes registrable); ``memory``, ``file`` and ``http`` need an explicit opt-in."""


class AdapterSource(Protocol):
    """Something the registry can turn into a local adapter folder."""

    def describe(self) -> str:
        """A short, credential-free description stored in the registry entry."""
        ...

    def materialize(self, workdir: Path, limits: AdapterLimits) -> Path:
        """Return a local folder with the adapter's files (may live inside ``workdir``)."""
        ...


def copy_bounded(source: IO[bytes], target: Path, limit: int, what: str, digest: Any = None) -> int:
    """Copy a stream to a new file, refusing more than ``limit`` bytes; return the size.

    ``digest`` (a ``hashlib`` object), if given, is updated with every byte written.
    """
    written = 0
    with target.open("xb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            if written > limit:
                raise UnsafeArchiveError(
                    f"{what} is larger than {limit} bytes.", code="source_too_large", param="source"
                )
            if digest is not None:
                digest.update(chunk)
            out.write(chunk)
    return written


def _check_inside_roots(path: str | os.PathLike[str], roots: Iterable[Path]) -> Path:
    """Resolve ``path`` and every link below it; all must stay inside one of ``roots``."""
    resolved_roots = [Path(r).resolve() for r in roots]
    if not resolved_roots:
        raise SourceNotAllowedError("No local adapter folders are allowed on this gateway.")
    if "\x00" in str(path):
        raise SourceNotAllowedError("The adapter path contains a NUL character.")
    try:
        resolved = Path(path).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):
        raise SourceUnavailableError(f"The adapter path {str(path)!r} does not exist.") from None

    def inside(candidate: Path) -> bool:
        return any(candidate.is_relative_to(root) for root in resolved_roots)

    if not inside(resolved):
        raise SourceNotAllowedError(
            f"The adapter path {str(path)!r} is outside the allowed folders."
        )
    if resolved.is_dir():
        for folder, dirs, files in os.walk(resolved):
            for name in [*dirs, *files]:
                if not inside(Path(folder, name).resolve()):
                    raise SourceNotAllowedError(
                        f"{name!r} in the adapter folder links outside the allowed folders."
                    )
    return resolved


class LocalDirectorySource:
    """An adapter folder on this machine, under one of the operator's allowed roots.

    Symlinks are resolved, and the folder and every link inside it must stay inside
    the roots. Nothing is copied here: the registry copies the files it keeps.
    """

    def __init__(self, path: str | os.PathLike[str], allowed_roots: Iterable[Path | str]) -> None:
        self.path = Path(path)
        self.allowed_roots = [Path(r) for r in allowed_roots]

    def describe(self) -> str:
        return f"local:{self.path}"

    def materialize(self, workdir: Path, limits: AdapterLimits) -> Path:
        resolved = _check_inside_roots(self.path, self.allowed_roots)
        if not resolved.is_dir():
            raise SourceUnavailableError(f"The adapter path {str(self.path)!r} is not a folder.")
        return resolved


class ArchiveSource:
    """An uploaded ``.zip`` or ``.tar.gz`` stream, spooled to disk then safely unpacked."""

    def __init__(self, fileobj: IO[bytes], filename: str = "upload") -> None:
        self.fileobj = fileobj
        self.filename = filename

    def describe(self) -> str:
        return f"upload:{os.path.basename(self.filename)}"

    def materialize(self, workdir: Path, limits: AdapterLimits) -> Path:
        archive = workdir / "archive"
        try:
            copy_bounded(self.fileobj, archive, limits.max_archive_bytes, "The archive")
        except UnsafeArchiveError as exc:
            raise UnsafeArchiveError(exc.message, code="archive_too_large", param="file") from None
        unpacked = workdir / "unpacked"
        unpacked.mkdir()
        return extract_archive(archive, unpacked, limits)


def _protocol(uri: str) -> str:
    """The one protocol of ``uri``. Chained URIs (``a::b``) are refused: fsspec would
    open the inner URL with the outer one's options, past every check made here."""
    if "::" in uri:
        raise InvalidSourceUriError(
            "Chained URIs (containing '::') are not accepted; give one plain URI "
            "(and a host name rather than an IPv6 literal)."
        )
    return fsspec.core.split_protocol(uri)[0] or "file"


def _safe(exc: BaseException) -> str:
    """A library's error message, which often quotes the whole URI, without secrets."""
    return redact_credentials(str(exc))


class FsspecSource:
    """An adapter folder (or archive file) behind an fsspec URI: ``s3://``, ``hf://``...

    Only ``allowed_protocols`` are used; ``file://`` additionally needs the path to be
    under ``allowed_roots``, exactly like ``LocalDirectorySource``; ``http(s)://`` only
    reaches public addresses, after redirects too (``adapters.public_hosts``), unless
    ``allow_internal_hosts``. The files are copied into ``workdir`` with the count and
    byte limits enforced on the bytes received. What is stored or reported about the
    source never carries the URI's credentials.
    """

    def __init__(
        self,
        uri: str,
        *,
        allowed_protocols: Iterable[str] = DEFAULT_PROTOCOLS,
        allowed_roots: Iterable[Path | str] = (),
        storage_options: dict[str, Any] | None = None,
        allow_internal_hosts: bool = False,
    ) -> None:
        self.uri = uri
        self.allowed_protocols = frozenset(allowed_protocols)
        self.allowed_roots = [Path(r) for r in allowed_roots]
        self.storage_options = storage_options or {}
        self.allow_internal_hosts = allow_internal_hosts

    def describe(self) -> str:
        return f"uri:{redact_uri(self.uri)}"

    def materialize(self, workdir: Path, limits: AdapterLimits) -> Path:
        fs, root, guard = self._open()
        try:
            return self._fetch(fs, root, workdir, limits)
        except Exception as exc:
            if guard is not None:  # a refusal often surfaces as "not found" or I/O error
                guard.raise_if_refused()
            if isinstance(exc, OSError | ValueError):
                message = f"Cannot read {self.describe()}: {_safe(exc)}"
                raise SourceUnavailableError(message) from None
            raise

    def exists(self) -> bool:
        """Whether anything is at the URI (after the same checks as ``materialize``)."""
        fs, root, guard = self._open(missing_ok=True)
        if root is None:
            return False
        try:
            return bool(fs.exists(root))
        except Exception as exc:
            if guard is not None:
                guard.raise_if_refused()
            if isinstance(exc, OSError | ValueError):
                message = f"Cannot read {self.describe()}: {_safe(exc)}"
                raise SourceUnavailableError(message) from None
            raise

    def _open(self, missing_ok: bool = False) -> tuple[Any, Any, HostGuard | None]:
        """The filesystem and path of the URI, once its protocol and place are allowed
        (``missing_ok``: the path is None for a local path that does not exist)."""
        protocol = _protocol(self.uri)
        if protocol not in self.allowed_protocols:
            raise SourceNotAllowedError(
                f"The URI protocol {protocol!r} is not allowed; allowed: "
                f"{sorted(self.allowed_protocols)}."
            )
        guard = self._guard(protocol)
        options = {**self.storage_options, **(guard.storage_options() if guard else {})}
        try:
            fs, root = fsspec.core.url_to_fs(self.uri, **options)
        except (ImportError, ValueError, OSError) as exc:
            raise SourceUnavailableError(f"Cannot open {self.describe()}: {_safe(exc)}") from None
        if protocol in LOCAL_PROTOCOLS:
            if missing_ok and not os.path.lexists(root):
                return fs, None, guard
            _check_inside_roots(root, self.allowed_roots)
        return fs, root, guard

    def _guard(self, protocol: str) -> HostGuard | None:
        """For ``http(s)``: check the URI's own host now, and every connection later."""
        if protocol not in HTTP_PROTOCOLS or self.allow_internal_hosts:
            return None
        try:  # aiohttp, as fsspec's http(s) itself, is only needed for these URIs
            from adapters.public_hosts import HostGuard, check_public_host
        except ImportError:
            raise SourceUnavailableError(
                f"{protocol}:// adapter URIs need the aiohttp package on the gateway."
            ) from None
        parts = urlsplit(self.uri)
        try:
            port = parts.port
        except ValueError:
            raise InvalidSourceUriError("The adapter URI has an invalid port.") from None
        check_public_host(parts.hostname, port, protocol)
        return HostGuard()

    def _fetch(self, fs: Any, root: str, workdir: Path, limits: AdapterLimits) -> Path:
        if fs.isfile(root):
            with fs.open(root, "rb") as remote:
                archive = workdir / "archive"
                copy_bounded(remote, archive, limits.max_archive_bytes, "The archive")
            unpacked = workdir / "unpacked"
            unpacked.mkdir()
            return extract_archive(archive, unpacked, limits)
        if not fs.isdir(root):
            raise SourceUnavailableError(f"Nothing found at {self.describe()}.")
        return self._copy_folder(fs, root, workdir / "download", limits)

    def _copy_folder(self, fs: Any, root: str, dest: Path, limits: AdapterLimits) -> Path:
        listing = fs.find(root, detail=True, withdirs=False)
        if len(listing) > limits.max_files:
            raise UnsafeArchiveError(
                f"{self.describe()} holds {len(listing)} files; at most {limits.max_files}.",
                code="source_too_many_files",
                param="source",
            )
        dest.mkdir()
        base = root.rstrip("/")
        total = 0
        for name in sorted(listing):
            relative = safe_relative_path(posixpath.relpath(name, base))
            target = dest.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            budget = min(limits.max_weights_bytes, limits.max_total_bytes - total)
            with fs.open(name, "rb") as remote:
                total += copy_bounded(remote, target, budget, f"{self.describe()}/{relative}")
        return dest
