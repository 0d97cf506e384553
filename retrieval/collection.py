"""One collection on disk: immutable versions and an atomically swapped pointer.

Layout under the store root::

    <name>/
      CURRENT               text file holding the committed version number
      v00000006/            the previous version (kept so a crash never loses data)
      v00000007/            manifest.json documents.json chunks.jsonl index.faiss
                            bm25.npz bm25_vocabulary.json bm25_meta.json
      .tmp-<random>/        a version being written (removed by the next writer)
    .locks/<name>.lock      flock'ed by the one process writing the collection (kept
                            outside it so that a rejected first ingest creates nothing)

A commit writes and fsyncs a complete version under ``.tmp-*``, renames it to
``vNNNNNNNN``, then replaces ``CURRENT`` with ``os.replace``. A process killed at any
point leaves ``CURRENT`` naming a complete version: readers never see half a write.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.bm25 import META_FILE, Bm25Index
from retrieval.errors import IndexCorruptError, InvalidCollectionNameError
from retrieval.index import DenseIndex, IndexSettings
from retrieval.records import Chunk, DocumentInfo

FORMAT_VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_VERSION_DIR = re.compile(r"^v(\d{8})$")


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe collection directory name, else raise."""
    if not _NAME.match(name) or ".." in name:
        raise InvalidCollectionNameError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '-', '.', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Snapshot:
    """A fully loaded, immutable version of one collection; row ``i`` of both indexes
    is ``chunks[i]``. Shared freely between threads."""

    name: str
    version: int
    embedder: str
    dimension: int
    documents: dict[str, DocumentInfo]
    chunks: list[Chunk]
    dense: DenseIndex
    bm25: Bm25Index
    rows_by_document: dict[str, list[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.rows_by_document:
            for row, chunk in enumerate(self.chunks):
                self.rows_by_document.setdefault(chunk.document_id, []).append(row)

    @classmethod
    def empty(cls, name: str, embedder: str, dimension: int, settings: IndexSettings) -> Snapshot:
        vectors = np.zeros((0, dimension), dtype=np.float32)
        return cls(
            name,
            0,
            embedder,
            dimension,
            {},
            [],
            DenseIndex.build(vectors, dimension, settings),
            Bm25Index.build([]),
        )

    def updated(
        self,
        removed: set[str],
        documents: Sequence[DocumentInfo],
        chunks: Sequence[Chunk],
        vectors: np.ndarray,
    ) -> Snapshot:
        """The next version: documents ``removed`` dropped, then the new ones appended."""
        keep: np.ndarray | None = None
        if removed & self.documents.keys():
            mask = np.ones(len(self.chunks), dtype=bool)
            for document_id in removed:
                mask[self.rows_by_document.get(document_id, [])] = False
            keep = np.flatnonzero(mask)
        kept_chunks = self.chunks if keep is None else [self.chunks[i] for i in keep]
        kept_documents = {k: v for k, v in self.documents.items() if k not in removed}
        kept_documents.update((d.document_id, d) for d in documents)
        return Snapshot(
            self.name,
            self.version + 1,
            self.embedder,
            self.dimension,
            kept_documents,
            [*kept_chunks, *chunks],
            self.dense.updated(keep, vectors),
            self.bm25.updated(
                keep, [c.embedding_text() for c in chunks], [c.language for c in chunks]
            ),
        )


class CollectionDirectory:
    """Reads and commits the versions of one collection directory.

    ``lock()`` is the cross-process writer lock; commits must hold it. Loading needs
    no lock: the pointer only ever names complete versions.
    """

    def __init__(self, path: Path, lock_path: Path) -> None:
        self.path = path
        self.pointer = path / "CURRENT"
        self.lock_path = lock_path

    def exists(self) -> bool:
        return self.pointer.is_file()

    def pointer_stamp(self) -> tuple[int, int, str] | None:
        """Changes whenever a commit replaces the pointer (inode, mtime, content)."""
        try:
            with open(self.pointer, "rb") as handle:
                stat = os.fstat(handle.fileno())
                return stat.st_ino, stat.st_mtime_ns, handle.read(32).decode("ascii", "replace")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def current_version(self) -> int:
        try:
            return int(self.pointer.read_text(encoding="ascii").strip())
        except (FileNotFoundError, ValueError) as exc:
            raise IndexCorruptError(f"{self.pointer}: no valid version pointer") from exc

    def read_manifest(self) -> dict[str, Any]:
        """The committed version's manifest (counts, embedder) without loading indexes."""
        manifest: dict[str, Any] = self._read_json(self._version_dir() / "manifest.json")
        return manifest

    def read_documents(self) -> list[DocumentInfo]:
        """The committed version's documents without loading indexes."""
        data = self._read_json(self._version_dir() / "documents.json")
        return [DocumentInfo.from_dict(d) for d in data]

    def _version_dir(self) -> Path:
        return self.path / f"v{self.current_version():08d}"

    @staticmethod
    def _read_json(path: Path) -> Any:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexCorruptError(f"{path}: cannot read ({exc})") from exc

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def load(self, settings: IndexSettings) -> Snapshot:
        directory = self._version_dir()
        version = int(directory.name[1:])
        try:
            manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
            documents_data = json.loads((directory / "documents.json").read_text("utf-8"))
            with open(directory / "chunks.jsonl", encoding="utf-8") as handle:
                chunks = [Chunk.from_dict(json.loads(line)) for line in handle if line.strip()]
            dense = DenseIndex.load(directory / "index.faiss", settings)
            bm25 = Bm25Index.load(directory)
            if bm25 is None:  # saved by an older analyzer: re-analyse the stored texts
                bm25 = Bm25Index.build(
                    [c.embedding_text() for c in chunks], [c.language for c in chunks]
                )
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise IndexCorruptError(f"{directory}: cannot load collection version ({exc})") from exc
        if manifest.get("format") != FORMAT_VERSION:
            raise IndexCorruptError(f"{directory}: unknown format {manifest.get('format')!r}")
        if not len(chunks) == dense.size == bm25.size == manifest["chunk_count"]:
            raise IndexCorruptError(f"{directory}: chunk, vector and term counts disagree")
        documents = {d["document_id"]: DocumentInfo.from_dict(d) for d in documents_data}
        return Snapshot(
            self.path.name,
            version,
            manifest["embedder"],
            int(manifest["dimension"]),
            documents,
            chunks,
            dense,
            bm25,
        )

    def commit(self, snapshot: Snapshot, keep_versions: int = 2) -> None:
        """Write ``snapshot`` as a new version and point ``CURRENT`` at it (hold ``lock``)."""
        self.path.mkdir(parents=True, exist_ok=True)
        final = self.path / f"v{snapshot.version:08d}"
        staging = self.path / f".tmp-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            self._write_version(staging, snapshot)
            if final.exists():  # left by a crash after the rename, before the pointer swap
                shutil.rmtree(final)
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        _fsync_directory(self.path)
        pointer_tmp = self.path / f".CURRENT-{uuid.uuid4().hex}"
        _write_file(pointer_tmp, f"{snapshot.version}\n".encode("ascii"))
        os.replace(pointer_tmp, self.pointer)
        _fsync_directory(self.path)
        self._remove_stale(snapshot.version, keep_versions)

    def remove(self) -> None:
        """Delete the whole collection: the rename makes it vanish at once for readers."""
        trash = self.path.with_name(f".trash-{self.path.name}-{uuid.uuid4().hex}")
        os.rename(self.path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _write_version(self, directory: Path, snapshot: Snapshot) -> None:
        documents = [d.to_dict() for d in snapshot.documents.values()]
        _write_file(directory / "documents.json", json.dumps(documents).encode("utf-8"))
        lines = "".join(json.dumps(c.to_dict(), ensure_ascii=False) + "\n" for c in snapshot.chunks)
        _write_file(directory / "chunks.jsonl", lines.encode("utf-8"))
        snapshot.dense.save(directory / "index.faiss")
        snapshot.bm25.save(directory)
        for name in ("index.faiss", "bm25.npz", "bm25_vocabulary.json", META_FILE):
            _fsync_file(directory / name)
        manifest = {
            "format": FORMAT_VERSION,
            "version": snapshot.version,
            "embedder": snapshot.embedder,
            "dimension": snapshot.dimension,
            "index_kind": snapshot.dense.kind,
            "chunk_count": len(snapshot.chunks),
            "document_count": len(snapshot.documents),
            "created_at": time.time(),
        }
        _write_file(directory / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))
        _fsync_directory(directory)

    def _remove_stale(self, current: int, keep_versions: int) -> None:
        for entry in self.path.iterdir():
            match = _VERSION_DIR.match(entry.name)
            stale_version = match and int(match.group(1)) <= current - keep_versions
            if stale_version or entry.name.startswith((".tmp-", ".CURRENT-")):
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_directory(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
