"""``RegistryDocument``: the registry's state as last read from its store, and the one
way to change it (compare-and-swap, re-applied when another process saved first)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from adapters.errors import RegistryError
from adapters.manifest import RegistryState
from adapters.registry_state_store import (
    RegistryStateStore,
    RegistryUnavailableError,
    StateConflictError,
)
from adapters.revision_watcher import RevisionWatcher

T = TypeVar("T")
SAVE_ATTEMPTS = 8
"""Compare-and-swap tries of one change before giving up (other gateways kept winning)."""


class RegistryDocument:
    """``state`` is an immutable ``RegistryState``; ``mutate`` replaces it.

    Concurrency rule: ``lock`` (the registry's ``RLock``) is held for every reload and
    save, so a mutation never interleaves with another in this process. Reading
    ``state`` takes no lock (one attribute read of an immutable object) and does no
    I/O: with a shared store, a ``RevisionWatcher`` thread re-reads the document every
    ``refresh_seconds`` when its revision moved, which bounds how stale reads are.
    """

    def __init__(
        self,
        store: RegistryStateStore,
        prepare: Callable[[RegistryState], RegistryState],
        lock: threading.RLock,
        refresh_seconds: float,
    ) -> None:
        self._store = store
        self._prepare = prepare
        self._lock = lock
        self.shared = store.shared
        revision, state = store.load()
        self.revision = revision
        self.state = prepare(state or RegistryState())
        self._watcher: RevisionWatcher | None = None
        if self.shared:
            self._watcher = RevisionWatcher(self.refresh, refresh_seconds, "registry-refresh")

    def refresh(self) -> bool:
        """Re-read the document if another process changed it; True if it did (I/O)."""
        if not self.shared or self._store.revision() == self.revision:
            return False
        with self._lock:
            return self._reload()

    def reload_if_moved(self) -> None:
        """Call with the lock held, before deciding anything from ``state``."""
        if self.shared and self._store.revision() != self.revision:
            self._reload()

    def mutate(
        self, change: Callable[[RegistryState], tuple[RegistryState, T]], *, fresh: bool = False
    ) -> T:
        """Apply ``change`` to the current state and save it; return what ``change`` gave.

        ``change`` must depend only on the state it is given: it is applied again to a
        fresher state when another process saved first, and raises the usual typed
        error when the change is no longer valid there. A save cut off by a connection
        failure counts as done if the store holds its document afterwards.

        ``fresh``: the caller holds the lock and has just called ``reload_if_moved``, so
        the revision is not asked again (a save made since is still refused by the
        compare-and-swap, and ``change`` re-applied).
        """
        with self._lock:
            if not fresh:
                self.reload_if_moved()
            for _ in range(SAVE_ATTEMPTS):
                new_state, result = change(self.state)
                # Re-validate the invariants on the new state before it is written.
                checked = RegistryState.model_validate(new_state.model_dump())
                try:
                    self.revision = self._store.save(self.revision, checked)
                except StateConflictError:
                    self._reload()
                    continue
                except RegistryUnavailableError:
                    if not self._landed(checked):
                        raise
                self.state = checked
                return result
        raise RegistryError("The registry kept changing under this update; try again.")

    def _landed(self, saved: RegistryState) -> bool:
        """After a save was cut off: True if it committed (its document is stored now).

        Raises ``RegistryUnavailableError`` when the store still cannot be read: the
        outcome is unknown then, and the caller must not undo anything it did for it.
        """
        revision, stored = self._store.load()
        if stored is not None and self._prepare(stored) == self._prepare(saved):
            self.revision = revision
            return True
        return False

    def close(self) -> None:
        if self._watcher is not None:
            self._watcher.stop()
        with self._lock:
            self._store.close()

    def _reload(self) -> bool:
        revision, state = self._store.load()
        if revision == self.revision:
            return False
        self.revision = revision
        self.state = self._prepare(state or RegistryState())
        return True
