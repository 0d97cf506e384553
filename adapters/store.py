"""The registry's data folder: its layout, its exclusive lock, and the adapter copies.

Layout::

    <data_dir>/
        registry.json                     the registry (manifest.RegistryFile)
        .lock                             flock'ed while a registry object is open
        adapters/<name>/<version>/        validated copies: adapter_config.json,
                                          adapter_model.safetensors (all the engine reads)
        staging/                          private work folders of registrations in
                                          progress (one per registration, unique
                                          names); emptied when the registry opens

Shared mode (``exclusive=False``: several gateways, the registry document in a shared
store, this folder on a shared volume): no lock is taken, and ``clean`` deletes only
what is older than a grace period, never a folder another gateway is committing.

A registration is staged, validated in ``staging/``, and moved into ``adapters/`` with
one ``os.replace``, so the engine can never see a half-copied or unvalidated folder.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from adapters.errors import RegistryLockedError
from adapters.manifest import RegistryFile, fsync_dir
from adapters.sources import copy_bounded
from adapters.validation import CONFIG_FILE, STORED_FILES

REGISTRY_FILE = "registry.json"
LOCK_FILE = ".lock"


class AdapterStore:
    """Owns one data folder exclusively (``flock``) until ``close()``, or shares it.

    Only the registry calls it, under the registry's lock for ``commit``/``remove``;
    ``workdir`` and ``stage`` touch only private folders and run outside that lock.
    Shared: ``commit``'s rename is what decides between two gateways committing the same
    ``name@version`` (it fails for the second); ``remove`` only ever deletes versions the
    shared registry document already dropped, whose names are never reused.
    """

    def __init__(self, data_dir: Path | str, *, exclusive: bool = True) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.adapters_dir = self.data_dir / "adapters"
        self.staging_dir = self.data_dir / "staging"
        for folder in (self.data_dir, self.adapters_dir, self.staging_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.exclusive = exclusive
        self.registry_file = RegistryFile(self.data_dir / REGISTRY_FILE)
        self._lock_fd: int | None = None
        if exclusive:
            self._lock()

    def _lock(self) -> None:
        self._lock_fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise RegistryLockedError(
                f"The adapter data folder {self.data_dir} is already open in another registry "
                "(this or another process); close that one first."
            ) from None

    def close(self) -> None:
        """Release the data folder's lock (idempotent)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def path_for(self, name: str, version: str) -> Path:
        """Folder of the stored copy of ``name@version``."""
        return self.adapters_dir / name / version

    @contextmanager
    def workdir(self) -> Iterator[Path]:
        """A private, empty folder under ``staging/``, deleted afterwards whatever happens."""
        path = Path(tempfile.mkdtemp(prefix="work-", dir=self.staging_dir))
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def stage(self, source_dir: Path, workdir: Path, max_file_bytes: int) -> tuple[Path, str]:
        """Copy the files the engine needs into ``workdir/staged``; return it and the sha256.

        The hash is computed on the bytes written, so it describes the stored copy.
        """
        staged = workdir / "staged"
        staged.mkdir()
        digest = hashlib.sha256()
        for name in STORED_FILES:
            with (source_dir / name).open("rb") as src:
                copy_bounded(src, staged / name, max_file_bytes, name, digest)
            with (staged / name).open("rb") as fh:
                os.fsync(fh.fileno())  # durable before commit renames it into place
            if name == CONFIG_FILE:
                digest = hashlib.sha256()  # only the weights file is hashed
        return staged, digest.hexdigest()

    def commit(self, staged: Path, name: str, version: str) -> Path:
        """Move a validated staged folder into place with one rename; return its path.

        Raises ``FileExistsError`` when ``name@version`` is already there (in shared
        mode: another gateway committed it first).
        """
        final = self.path_for(name, version)
        for _ in range(3):
            final.parent.mkdir(exist_ok=True)
            try:
                os.rename(staged, final)  # fails if ``final`` exists and is not empty
                break
            except FileNotFoundError:
                if not staged.exists():
                    raise
                # ``remove`` of another version dropped the name folder in between.
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise FileExistsError(errno.EEXIST, f"{name}@{version} exists") from None
                raise
        fsync_dir(final.parent)
        return final

    def remove(self, name: str, version: str) -> None:
        """Delete a stored copy: renamed away first, so it vanishes in one step."""
        final = self.path_for(name, version)
        if not final.exists():
            return
        trash = self.staging_dir / f"removed-{uuid.uuid4().hex}"
        try:
            os.rename(final, trash)
        except FileNotFoundError:
            return  # another gateway removed it first
        shutil.rmtree(trash, ignore_errors=True)
        with suppress(OSError):  # only if empty; another gateway may be committing there
            final.parent.rmdir()

    def clean(self, known: set[tuple[str, str]], *, older_than: float = 0.0) -> list[Path]:
        """Empty ``staging/`` and delete stored copies no entry knows; return the latter.

        A crash between ``commit`` and the registry write leaves such orphans behind.
        ``older_than`` (seconds, shared mode) spares anything modified more recently: a
        registration of another gateway in progress, or committed a moment ago and not
        yet in the ``known`` set its caller read.
        """
        cutoff = time.time() - older_than

        def old(path: Path) -> bool:
            try:
                return older_than <= 0 or path.stat().st_mtime < cutoff
            except FileNotFoundError:
                return False  # another gateway removed it meanwhile

        for leftover in self.staging_dir.iterdir():
            if old(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
        orphans = [
            version_dir
            for name_dir in self.adapters_dir.iterdir()
            if name_dir.is_dir()
            for version_dir in name_dir.iterdir()
            if version_dir.is_dir()
            and (name_dir.name, version_dir.name) not in known
            and old(version_dir)
        ]
        for orphan in orphans:
            self.remove(orphan.parent.name, orphan.name)
        return orphans


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()
