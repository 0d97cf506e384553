"""``AdapterRegistry``: the versioned, persistent catalogue of validated LoRA adapters.

The gateway builds one at start-up and keeps it for the process's life::

    base = BaseModelSpec.from_directory(model_dir, name="smollm2", aliases=[hub_id])
    registry = AdapterRegistry(data_dir, AdapterValidator(base, AdapterLimits(max_lora_rank=16)))
    entry = registry.register("support-tone", LocalDirectorySource(path, roots))
    hit = registry.resolve("support-tone")        # or "support-tone@v2"
    LoRARequest(hit.ref, hit.lora_int_id, str(hit.path))

Several gateways share one registry by giving each a ``state_store`` that is shared
(``adapters.pg_registry_state.PostgresStateStore``) and the same ``data_dir`` on a
shared volume: every mutation is a compare-and-swap on the store's revision, and each
registry re-reads the document when the revision moves (``refresh_seconds``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

from adapters import registry_changes as changes
from adapters.base_model import BaseModelSpec
from adapters.errors import (
    AdapterConflictError,
    RegistryError,
)
from adapters.limits import AdapterLimits
from adapters.manifest import AdapterEntry, AdapterStatus, RegistryState
from adapters.naming import AdapterRef, check_name, check_version
from adapters.registry_document import SAVE_ATTEMPTS, RegistryDocument, T
from adapters.registry_state_store import (
    FileStateStore,
    RegistryStateStore,
    RegistryUnavailableError,
)
from adapters.sources import AdapterSource
from adapters.store import AdapterStore, file_sha256
from adapters.traffic_split import SplitOptions, TrafficSplit
from adapters.validation import STORED_FILES, WEIGHTS_FILE, AdapterValidator

ORPHAN_GRACE_SECONDS = 3600.0
"""Shared mode: unknown adapter folders younger than this are left alone at start-up."""


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

    Concurrency rule: one ``threading.RLock`` guards changes to the state and the
    registry file. Reads take no lock: they read the current immutable state once and
    return immutable ``AdapterEntry`` objects.
    A mutation builds a new ``RegistryState``, writes it atomically, and only then
    swaps it in, all under the lock, so readers see the old or the new state and a
    failed write changes nothing. ``register`` does its slow work (fetch, copy,
    validate, hash) outside the lock in a private work folder, having reserved its
    ``name@version`` first, and takes the lock only to commit. One process owns a data
    folder at a time (``flock``); call ``close()`` (or use ``with``) to release it.

    Shared store (several processes): no ``flock``. Each mutation first re-reads the
    document if its revision moved, applies the change, and saves it with
    compare-and-swap; when another process saved first it re-reads and re-applies (a
    change that is no longer valid raises its usual typed error, e.g. a version taken
    meanwhile). Reads never do I/O: a ``RevisionWatcher`` thread re-reads the document
    when its revision moves, so reads are at most ``refresh_seconds`` (plus one query)
    stale; with the store unreachable they keep the last state and mutations raise
    ``RegistryUnavailableError``.
    """

    def __init__(
        self,
        data_dir: Path | str,
        validator: AdapterValidator,
        *,
        clock: Callable[[], datetime] = _utc_now,
        state_store: RegistryStateStore | None = None,
        refresh_seconds: float = 0.5,
    ) -> None:
        self._lock = threading.RLock()
        self._validator = validator
        self._clock = clock
        self._fingerprint = validator.base.fingerprint
        self._reserved: set[str] = set()
        shared = state_store is not None and state_store.shared
        self._store = AdapterStore(data_dir, exclusive=not shared)
        states = state_store or FileStateStore(self._store.registry_file)
        try:
            self._doc = RegistryDocument(
                states, self._with_store_paths, self._lock, refresh_seconds
            )
            known = {(e.name, e.version) for e in self._state.entries}
            self._store.clean(known, older_than=ORPHAN_GRACE_SECONDS if shared else 0)
        except BaseException:
            if hasattr(self, "_doc"):
                self._doc.close()
            else:
                states.close()
            self._store.close()
            raise
        self._closed = False

    @classmethod
    def open(
        cls,
        data_dir: Path | str,
        base: BaseModelSpec,
        limits: AdapterLimits | None = None,
        *,
        state_store: RegistryStateStore | None = None,
        refresh_seconds: float = 0.5,
    ) -> AdapterRegistry:
        """Shorthand for ``AdapterRegistry(data_dir, AdapterValidator(base, limits), ...)``."""
        validator = AdapterValidator(base, limits)
        return cls(data_dir, validator, state_store=state_store, refresh_seconds=refresh_seconds)

    def close(self) -> None:
        """Release the data folder; later mutations raise ``RegistryError``."""
        self._doc.close()
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

    @property
    def shared(self) -> bool:
        """True when other processes share this registry (its state store is shared)."""
        return self._doc.shared

    @property
    def revision(self) -> int:
        """The store revision of the state served now (grows with every change seen)."""
        return self._doc.revision

    @property
    def _state(self) -> RegistryState:
        return self._doc.state

    def refresh(self) -> bool:
        """Re-read the document if another process changed it; True if it did (I/O)."""
        return self._doc.refresh()

    # ----------------------------------------------------------------- queries

    def resolve(self, model: str) -> AdapterEntry:
        """The servable entry for ``name`` (active version) or ``name@version``.

        Raises ``AdapterNotFoundError`` (404) when nothing servable matches and
        ``BaseModelMismatchError`` (422) for an entry validated on another base model.
        """
        return changes.resolve(self._state, model, self._fingerprint)

    def get(self, name: str, version: str) -> AdapterEntry:
        """The entry ``name@version`` whatever its status; ``AdapterNotFoundError`` if none."""
        return changes.find(self._state, name, version)

    def entries(self, name: str | None = None) -> list[AdapterEntry]:
        """All entries (or those of ``name``), sorted by name then ``lora_int_id``."""
        found = [e for e in self._state.entries if name is None or e.name == name]
        return sorted(found, key=lambda e: (e.name, e.lora_int_id))

    def split(self, name: str) -> TrafficSplit | None:
        """The traffic split of ``name``, if one is set (read without I/O)."""
        return changes.split_of(self._state, name)

    def splits(self) -> tuple[TrafficSplit, ...]:
        return self._state.splits

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
        auto_version = version is None
        ref = self._reserve(name, version)
        try:
            with self._store.workdir() as work:
                limits = self._validator.limits
                source_dir = source.materialize(work, limits)
                self._validator.inspect_listing(source_dir)
                staged, sha256 = self._store.stage(source_dir, work, limits.max_weights_bytes)
                info = self._validator.validate(staged)
                with self._lock:
                    self._check_open()
                    self._doc.reload_if_moved()
                    ref = self._commit_files(staged, ref, auto_version)
                    committed = AdapterRef.parse(ref).version
                    assert committed is not None

                    def add(state: RegistryState) -> tuple[RegistryState, AdapterEntry]:
                        if ref in state.used_refs():
                            raise self._version_taken(ref)
                        has_active = any(
                            e.name == name and e.status is AdapterStatus.ACTIVE
                            for e in state.entries
                        )
                        make_active = activate is True or (activate is None and not has_active)
                        entry = AdapterEntry(
                            name=name,
                            version=committed,
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
                            path=self._store.path_for(name, committed),
                        )
                        others = (
                            changes.demoted(state.entries, name) if make_active else state.entries
                        )
                        new_state = state.model_copy(
                            update={
                                "entries": (*others, entry),
                                "next_lora_int_id": state.next_lora_int_id + 1,
                            }
                        )
                        return new_state, entry

                    try:
                        # Reloaded above, under this same lock: no second revision query.
                        return self._doc.mutate(add, fresh=True)
                    except RegistryUnavailableError:
                        # Maybe committed, maybe not: keep the files. Unknown to the
                        # registry, they are an orphan that ``clean`` deletes later.
                        raise
                    except BaseException:
                        self._store.remove(name, committed)
                        raise
        finally:
            with self._lock:
                self._reserved.discard(ref)

    def activate(self, name: str, version: str) -> AdapterEntry:
        """Make ``name@version`` the version ``resolve(name)`` returns, in one write."""
        return self._mutate(lambda state: changes.activate(state, name, version))

    def promote(
        self, name: str, version: str, stable: str
    ) -> tuple[AdapterEntry, TrafficSplit | None]:
        """Activate ``name@version`` if ``stable`` is still the active version (else
        ``AdapterConflictError`` ``stable_changed``) and end a split naming it, in one
        write (``registry_changes.promote``); the entry and the split it ended."""
        return self._mutate(lambda state: changes.promote(state, name, version, stable))

    def retire(
        self, name: str, version: str | None = None, *, purge: bool = False
    ) -> list[AdapterEntry]:
        """Stop serving ``name@version`` (all versions of ``name`` if ``version`` is None).

        Entries become ``retiring`` and keep their files until ``remove`` (so the engine
        can drain and unload them); ``purge=True`` removes them at once. Pinned entries
        refuse (``AdapterConflictError``): unpin first. Returns the affected entries.
        """
        affected = self._mutate(lambda state: changes.retire(state, name, version, purge=purge))
        if purge:
            self._delete_files(affected)
        return affected

    def remove(self, name: str, version: str) -> AdapterEntry:
        """Delete a retiring version and its files; its id and ref stay used forever."""
        removed = self._mutate(lambda state: changes.remove(state, name, version))
        self._delete_files([removed])
        return removed

    def set_split(
        self, name: str, weights: dict[str, int], options: SplitOptions | None = None
    ) -> TrafficSplit:
        """Route requests for ``name`` by ``weights`` (version -> percent, sum 100),
        sticky per caller (``adapters.traffic_split``), with ``options`` (shadow,
        rollback bounds); persisted and shared like activation. ``InvalidSplitError``
        (400) names what is wrong."""
        fingerprint = self._fingerprint
        return self._mutate(
            lambda state: changes.set_split(state, name, weights, fingerprint, options)
        )

    def clear_split(self, name: str, expected: TrafficSplit | None = None) -> TrafficSplit | None:
        """End ``name``'s split; returns the one it had (None: there was none). With
        ``expected``: only if the split is still that one (a rollback's compare-and-clear,
        safe when several gateways on one store decide at once)."""
        return self._mutate(lambda state: changes.clear_split(state, name, expected))

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

    @staticmethod
    def _version_taken(ref: str) -> AdapterConflictError:
        return AdapterConflictError(
            f"{ref!r} is already registered (or was, and versions are never reused).",
            code="adapter_version_exists",
        )

    def _next_free(self, name: str, taken: set[str]) -> str:
        n = 1 + sum(1 for ref in taken if ref.startswith(f"{name}@"))
        while f"{name}@v{n}" in taken or self._store.path_for(name, f"v{n}").exists():
            n += 1
        return f"{name}@v{n}"

    def _reserve(self, name: str, version: str | None) -> str:
        with self._lock:
            self._check_open()
            taken = self._state.used_refs() | self._reserved
            ref = self._next_free(name, taken) if version is None else f"{name}@{version}"
            if ref in taken:
                raise self._version_taken(ref)
            self._reserved.add(ref)
            return ref

    def _commit_files(self, staged: Path, ref: str, auto_version: bool) -> str:
        """Move the staged copy to its final folder; return the ref it was committed as.

        Call with the lock held and the state fresh. Another gateway may have taken the
        reserved ``name@version`` meanwhile (shared mode): an automatic version moves on
        to the next free one, an explicit one is refused (409).
        """
        parsed = AdapterRef.parse(ref)
        assert parsed.version is not None
        for _ in range(SAVE_ATTEMPTS):
            taken = self._state.used_refs() | (self._reserved - {ref})
            if ref not in taken:
                try:
                    self._store.commit(staged, parsed.name, AdapterRef.parse(ref).version or "")
                    break
                except FileExistsError:
                    pass  # another gateway committed these files and has not saved yet
            if not auto_version:
                raise self._version_taken(ref)
            self._reserved.discard(ref)
            ref = self._next_free(parsed.name, taken | {ref})
            self._reserved.add(ref)
        else:
            raise RegistryError(f"No free version of {parsed.name!r} found; try again.")
        return ref

    def _mutate(self, change: Callable[[RegistryState], tuple[RegistryState, T]]) -> T:
        self._check_open()
        return self._doc.mutate(change)

    def _delete_files(self, chosen: list[AdapterEntry]) -> None:
        # After the write: a crash here leaves orphans that ``clean()`` deletes.
        for entry in chosen:
            self._store.remove(entry.name, entry.version)

    def _set_pinned(self, name: str, version: str | None, *, pinned: bool) -> AdapterEntry:
        fingerprint = self._fingerprint
        return self._mutate(
            lambda state: changes.set_pinned(state, name, version, fingerprint, pinned=pinned)
        )

    def _with_store_paths(self, state: RegistryState) -> RegistryState:
        entries = tuple(
            e.model_copy(update={"path": self._store.path_for(e.name, e.version)})
            for e in state.entries
        )
        return state.model_copy(update={"entries": entries})
