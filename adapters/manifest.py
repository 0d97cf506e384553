"""The registry's persistent schema (pydantic) and its atomic, fsync'ed JSON file.

``RegistryState`` is the whole registry: entries, the never-reused ``lora_int_id``
counter, and the references of removed versions (also never reused). Its validator
holds the invariants, so a file that breaks them is reported as corrupt rather than
half-loaded. ``RegistryFile`` never rewrites or empties a file it failed to read.
"""

from __future__ import annotations

import json
import os
import uuid
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from adapters.errors import InvalidAdapterNameError, RegistryCorruptError
from adapters.naming import AdapterRef, check_name, check_version
from adapters.traffic_split import TrafficSplit


class AdapterStatus(StrEnum):
    """Lifecycle of one adapter version."""

    ACTIVE = "active"  # served for "name" (at most one per name) and for "name@version"
    INACTIVE = "inactive"  # served only when asked for by "name@version"
    RETIRING = "retiring"  # no longer served; files kept until ``remove`` (engine drains)


class AdapterEntry(BaseModel):
    """One registered adapter version, as stored in the registry file (immutable)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    version: str
    lora_int_id: int = Field(gt=0, description="vLLM LoRARequest id; unique, never reused.")
    source: str = Field(description="Where the adapter came from (credential-free).")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Of adapter_model.safetensors.")
    base_model: str | None = Field(description="adapter_config's base_model_name_or_path.")
    base_fingerprint: str = Field(description="Fingerprint of the base it was validated on.")
    rank: int = Field(gt=0)
    alpha: float
    target_modules: tuple[str, ...]
    created_at: datetime
    status: AdapterStatus
    pinned: bool = False
    size_bytes: int = Field(ge=0, description="Bytes of the stored files.")
    path: Path = Field(description="Folder of the stored, validated copy (LoRARequest path).")

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        try:
            return check_name(value)
        except InvalidAdapterNameError as exc:
            raise ValueError(exc.message) from None

    @field_validator("version")
    @classmethod
    def _valid_version(cls, value: str) -> str:
        try:
            return check_version(value)
        except InvalidAdapterNameError as exc:
            raise ValueError(exc.message) from None

    @property
    def ref(self) -> str:
        """``name@version``: unique per entry; also the natural vLLM ``lora_name``."""
        return str(AdapterRef(self.name, self.version))


class RegistryState(BaseModel):
    """Everything the registry persists; validated as a whole on every load and save."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    next_lora_int_id: int = Field(default=1, gt=0)
    entries: tuple[AdapterEntry, ...] = ()
    removed_refs: tuple[str, ...] = Field(
        default=(), description="name@version of removed entries: never registered again."
    )
    splits: tuple[TrafficSplit, ...] = Field(
        default=(), description="Weighted traffic splits between versions, one per name."
    )

    @model_validator(mode="after")
    def _invariants(self) -> RegistryState:
        refs = [e.ref for e in self.entries]
        if len(set(refs)) != len(refs):
            raise ValueError("duplicate name@version entries")
        ids = [e.lora_int_id for e in self.entries]
        if len(set(ids)) != len(ids):
            raise ValueError("duplicate lora_int_id")
        if any(i >= self.next_lora_int_id for i in ids):
            raise ValueError("a lora_int_id is not below next_lora_int_id")
        active = [e.name for e in self.entries if e.status is AdapterStatus.ACTIVE]
        if len(set(active)) != len(active):
            raise ValueError("more than one active version for a name")
        if set(refs) & set(self.removed_refs):
            raise ValueError("an entry is also listed as removed")
        split_names = [s.name for s in self.splits]
        if len(set(split_names)) != len(split_names):
            raise ValueError("more than one traffic split for a name")
        for split in self.splits:
            if any(f"{split.name}@{v}" not in refs for v in split.versions):
                raise ValueError(f"the traffic split of {split.name!r} names a missing version")
        return self

    def used_refs(self) -> set[str]:
        """Every name@version ever registered (current or removed)."""
        return {e.ref for e in self.entries} | set(self.removed_refs)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (renames, new files) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class RegistryFile:
    """Reads and atomically replaces the registry JSON file (temp + fsync + os.replace)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> RegistryState | None:
        """The stored state, ``None`` if no file exists yet; ``RegistryCorruptError`` if bad."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            return RegistryState.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise RegistryCorruptError(
                f"The registry file {self.path} is corrupt and was left untouched; restore it "
                f"from a backup or move it away to start empty. Cause: {exc}"
            ) from None

    def save(self, state: RegistryState) -> None:
        """Write ``state`` so that a crash leaves either the old or the new file."""
        body = state.model_dump_json(indent=2).encode()
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        fsync_dir(self.path.parent)
