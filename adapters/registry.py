"""``AdapterRegistry``: the versioned, persistent catalogue of validated LoRA adapters.

The gateway builds one at start-up and keeps it for the process's life::

    base = BaseModelSpec.from_directory(model_dir, name="smollm2", aliases=[hub_id])
    registry = AdapterRegistry(data_dir, AdapterValidator(base, AdapterLimits(max_lora_rank=16)))
    entry = registry.register("support-tone", LocalDirectorySource(path, roots))
    hit = registry.resolve("support-tone")        # or "support-tone@v2"
    LoRARequest(hit.ref, hit.lora_int_id, str(hit.path))
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from adapters.base_model import BaseModelSpec
from adapters.errors import (
    AdapterConflictError,
    AdapterNotFoundError,
    BaseModelMismatchError,
    InvalidAdapterNameError,
    RegistryError,
)
from adapters.limits import AdapterLimits
from adapters.manifest import AdapterEntry, AdapterStatus, RegistryState
from adapters.naming import AdapterRef, check_name, check_version
from adapters.sources import AdapterSource
from adapters.store import AdapterStore, file_sha256
from adapters.validation import STORED_FILES, WEIGHTS_FILE, AdapterValidator


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AdapterRegistry:
    """Adapters by name and version, each with a unique, never-reused ``lora_int_id``.

    * ``resolve("name")`` gives the active version, ``resolve("name@version")`` an
      explicit one (active or inactive); retiring versions are no longer served.
    * Every registered (name, version) gets the next value of a persisted counter as
      its ``lora_int_id``; neither ids nor ``name@version`` are ever reused, even after
      removal, because vLLM caches (prefix cache, loaded slots) key on them.
    * Files reach ``<data_dir>/adapters/<name>/<version>/`` only after validation.

    Concurrency rule: one ``threading.RLock`` guards the in-memory state and the
    registry file. Reads take it briefly and return immutable ``AdapterEntry`` objects.
    A mutation builds a new ``RegistryState``, writes it atomically, and only then
    swaps it in, all under the lock, so readers see the old or the new state and a
    failed write changes nothing. ``register`` does its slow work (fetch, copy,
    validate, hash) outside the lock in a private work folder, having reserved its
    ``name@version`` first, and takes the lock only to commit. One process owns a data
    folder at a time (``flock``); call ``close()`` (or use ``with``) to release it.
    """

    def __init__(
        self,
        data_dir: Path | str,
        validator: AdapterValidator,
        *,
        clock: Callable[[], datetime] = _utc_now,
    ) -> None:
        self._lock = threading.RLock()
        self._validator = validator
        self._clock = clock
        self._fingerprint = validator.base.fingerprint
        self._reserved: set[str] = set()
        self._store = AdapterStore(data_dir)
        try:
            state = self._store.registry_file.load() or RegistryState()
            self._state = self._with_store_paths(state)
            self._store.clean({(e.name, e.version) for e in state.entries})
        except BaseException:
            self._store.close()
            raise
        self._closed = False

    @classmethod
    def open(
        cls, data_dir: Path | str, base: BaseModelSpec, limits: AdapterLimits | None = None
    ) -> AdapterRegistry:
        """Shorthand for ``AdapterRegistry(data_dir, AdapterValidator(base, limits))``."""
        return cls(data_dir, AdapterValidator(base, limits))

    def close(self) -> None:
        """Release the data folder; later mutations raise ``RegistryError``."""
        with self._lock:
            self._closed = True
            self._store.close()

    def __enter__(self) -> AdapterRegistry:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def data_dir(self) -> Path:
        return self._store.data_dir

    @property
    def base(self) -> BaseModelSpec:
        return self._validator.base

    # ----------------------------------------------------------------- queries

    def resolve(self, model: str) -> AdapterEntry:
        """The servable entry for ``name`` (active version) or ``name@version``.

        Raises ``AdapterNotFoundError`` (404) when nothing servable matches and
        ``BaseModelMismatchError`` (422) for an entry validated on another base model.
        """
        try:
            ref = AdapterRef.parse(model)
        except InvalidAdapterNameError:
            raise AdapterNotFoundError(f"The model {model!r} does not exist.") from None
        with self._lock:
            entries = [e for e in self._state.entries if e.name == ref.name]
        if ref.version is None:
            hit = next((e for e in entries if e.status is AdapterStatus.ACTIVE), None)
            if hit is None:
                why = "has no active version" if entries else "does not exist"
                raise AdapterNotFoundError(f"The model {model!r} {why}.")
        else:
            hit = next((e for e in entries if e.version == ref.version), None)
            if hit is None or hit.status is AdapterStatus.RETIRING:
                why = "is retiring" if hit else "does not exist"
                raise AdapterNotFoundError(f"The model {model!r} {why}.")
        if hit.base_fingerprint != self._fingerprint:
            raise BaseModelMismatchError(
                f"The adapter {hit.ref!r} was validated on another base model; register it "
                "again for the one served now.",
                param="model",
            )
        return hit

    def get(self, name: str, version: str) -> AdapterEntry:
        """The entry ``name@version`` whatever its status; ``AdapterNotFoundError`` if none."""
        with self._lock:
            return self._find(name, version)

    def entries(self, name: str | None = None) -> list[AdapterEntry]:
        """All entries (or those of ``name``), sorted by name then ``lora_int_id``."""
        with self._lock:
            found = [e for e in self._state.entries if name is None or e.name == name]
        return sorted(found, key=lambda e: (e.name, e.lora_int_id))

    def verify(self) -> list[str]:
        """Check every stored copy against its sha256; return one line per problem."""
        problems = []
        for entry in self.entries():
            missing = [n for n in STORED_FILES if not (entry.path / n).is_file()]
            if missing:
                problems.append(f"{entry.ref}: missing {missing}")
            elif file_sha256(entry.path / WEIGHTS_FILE) != entry.sha256:
                problems.append(f"{entry.ref}: {WEIGHTS_FILE} does not match its sha256")
        return problems

    # --------------------------------------------------------------- mutations

    def register(
        self,
        name: str,
        source: AdapterSource,
        *,
        version: str | None = None,
        activate: bool | None = None,
        pinned: bool = False,
    ) -> AdapterEntry:
        """Validate the adapter from ``source`` and add it as ``name@version``.

        ``version`` defaults to the next free ``v<n>``. ``activate`` ``None`` makes the
        new version active only if ``name`` has no active version; ``True`` always
        does (the previous active version becomes inactive); ``False`` never does.
        Nothing reaches the store unless every check passes.
        """
        check_name(name)
        if version is not None:
            check_version(version)
        if name == self.base.name:
            raise AdapterConflictError(
                f"{name!r} is the served base model's name; choose another adapter name.",
                code="adapter_name_taken",
            )
        ref = self._reserve(name, version)
        version = AdapterRef.parse(ref).version
        assert version is not None
        try:
            with self._store.workdir() as work:
                limits = self._validator.limits
                source_dir = source.materialize(work, limits)
                self._validator.inspect_listing(source_dir)
                staged, sha256 = self._store.stage(source_dir, work, limits.max_weights_bytes)
                info = self._validator.validate(staged)
                with self._lock:
                    self._check_open()
                    state = self._state
                    has_active = any(
                        e.name == name and e.status is AdapterStatus.ACTIVE for e in state.entries
                    )
                    make_active = activate is True or (activate is None and not has_active)
                    entry = AdapterEntry(
                        name=name,
                        version=version,
                        lora_int_id=state.next_lora_int_id,
                        source=source.describe(),
                        sha256=sha256,
                        base_model=info.base_model,
                        base_fingerprint=self._fingerprint,
                        rank=info.rank,
                        alpha=info.alpha,
                        target_modules=info.target_modules,
                        created_at=self._clock(),
                        status=AdapterStatus.ACTIVE if make_active else AdapterStatus.INACTIVE,
                        pinned=pinned,
                        size_bytes=info.size_bytes,
                        path=self._store.path_for(name, version),
                    )
                    others = self._demoted(state.entries, name) if make_active else state.entries
                    new_state = state.model_copy(
                        update={
                            "entries": (*others, entry),
                            "next_lora_int_id": state.next_lora_int_id + 1,
                        }
                    )
                    self._store.commit(staged, name, version)
                    try:
                        self._save(new_state)
                    except BaseException:
                        self._store.remove(name, version)
                        raise
                    return entry
        finally:
            with self._lock:
                self._reserved.discard(ref)

    def activate(self, name: str, version: str) -> AdapterEntry:
        """Make ``name@version`` the version ``resolve(name)`` returns, in one write."""
        with self._lock:
            self._check_open()
            target = self._find(name, version)
            if target.status is AdapterStatus.RETIRING:
                raise AdapterConflictError(
                    f"{target.ref!r} is retiring and cannot be activated.", code="adapter_retiring"
                )
            active = target.model_copy(update={"status": AdapterStatus.ACTIVE})
            demoted = self._demoted(self._state.entries, name)
            entries = tuple(active if e.ref == target.ref else e for e in demoted)
            self._save(self._state.model_copy(update={"entries": entries}))
            return active

    def retire(
        self, name: str, version: str | None = None, *, purge: bool = False
    ) -> list[AdapterEntry]:
        """Stop serving ``name@version`` (all versions of ``name`` if ``version`` is None).

        Entries become ``retiring`` and keep their files until ``remove`` (so the engine
        can drain and unload them); ``purge=True`` removes them at once. Pinned entries
        refuse (``AdapterConflictError``): unpin first. Returns the affected entries.
        """
        with self._lock:
            self._check_open()
            chosen = [self._find(name, version)] if version else self.entries(name)
            if not chosen:
                raise AdapterNotFoundError(f"No adapter named {name!r}.", param="name")
            pinned = [e.ref for e in chosen if e.pinned]
            if pinned:
                raise AdapterConflictError(
                    f"{pinned} are pinned; unpin them before retiring.", code="adapter_pinned"
                )
            if purge:
                return self._purge(chosen)
            retired = {
                e.ref: e.model_copy(update={"status": AdapterStatus.RETIRING}) for e in chosen
            }
            entries = tuple(retired.get(e.ref, e) for e in self._state.entries)
            self._save(self._state.model_copy(update={"entries": entries}))
            return list(retired.values())

    def remove(self, name: str, version: str) -> AdapterEntry:
        """Delete a retiring version and its files; its id and ref stay used forever."""
        with self._lock:
            self._check_open()
            entry = self._find(name, version)
            if entry.status is not AdapterStatus.RETIRING:
                raise AdapterConflictError(
                    f"{entry.ref!r} is {entry.status.value}; retire it before removing it.",
                    code="adapter_not_retired",
                )
            return self._purge([entry])[0]

    def pin(self, name: str, version: str | None = None) -> AdapterEntry:
        """Mark an entry (default: the active version) as pinned: never retired or evicted."""
        return self._set_pinned(name, version, pinned=True)

    def unpin(self, name: str, version: str | None = None) -> AdapterEntry:
        """Clear the pinned flag of an entry (default: the active version)."""
        return self._set_pinned(name, version, pinned=False)

    # ---------------------------------------------------------------- internals

    def _check_open(self) -> None:
        if self._closed:
            raise RegistryError("The adapter registry is closed.")

    def _find(self, name: str, version: str) -> AdapterEntry:
        for entry in self._state.entries:
            if entry.name == name and entry.version == version:
                return entry
        raise AdapterNotFoundError(f"No adapter {name}@{version}.", param="name")

    def _reserve(self, name: str, version: str | None) -> str:
        with self._lock:
            self._check_open()
            taken = self._state.used_refs() | self._reserved
            if version is None:
                n = 1 + sum(1 for ref in taken if ref.startswith(f"{name}@"))
                while f"{name}@v{n}" in taken:
                    n += 1
                version = f"v{n}"
            ref = str(AdapterRef(name, version))
            if ref in taken:
                raise AdapterConflictError(
                    f"{ref!r} is already registered (or was, and versions are never reused).",
                    code="adapter_version_exists",
                )
            self._reserved.add(ref)
            return ref

    @staticmethod
    def _demoted(entries: tuple[AdapterEntry, ...], name: str) -> tuple[AdapterEntry, ...]:
        return tuple(
            e.model_copy(update={"status": AdapterStatus.INACTIVE})
            if e.name == name and e.status is AdapterStatus.ACTIVE
            else e
            for e in entries
        )

    def _purge(self, chosen: list[AdapterEntry]) -> list[AdapterEntry]:
        refs = {e.ref for e in chosen}
        state = self._state
        self._save(
            state.model_copy(
                update={
                    "entries": tuple(e for e in state.entries if e.ref not in refs),
                    "removed_refs": (*state.removed_refs, *sorted(refs)),
                }
            )
        )
        for entry in chosen:  # after the write: a crash here leaves orphans clean() deletes
            self._store.remove(entry.name, entry.version)
        return chosen

    def _set_pinned(self, name: str, version: str | None, *, pinned: bool) -> AdapterEntry:
        with self._lock:
            self._check_open()
            entry = self._find(name, version) if version else self.resolve(name)
            if pinned and entry.status is AdapterStatus.RETIRING:
                raise AdapterConflictError(
                    f"{entry.ref!r} is retiring and cannot be pinned.", code="adapter_retiring"
                )
            updated = entry.model_copy(update={"pinned": pinned})
            entries = tuple(updated if e.ref == entry.ref else e for e in self._state.entries)
            self._save(self._state.model_copy(update={"entries": entries}))
            return updated

    def _save(self, state: RegistryState) -> None:
        # Re-validate the invariants on the new state before it is written.
        checked = RegistryState.model_validate(state.model_dump())
        self._store.registry_file.save(checked)
        self._state = checked

    def _with_store_paths(self, state: RegistryState) -> RegistryState:
        entries = tuple(
            e.model_copy(update={"path": self._store.path_for(e.name, e.version)})
            for e in state.entries
        )
        return state.model_copy(update={"entries": entries})
