"""Where the registry's ``RegistryState`` document lives: a local file or a shared database.

``RegistryStateStore`` is a versioned document with compare-and-swap::

    revision, state = store.load()              # (0, None) before the first save
    revision = store.save(revision, new_state)  # StateConflictError if another writer won
    store.revision()                            # cheap: has anyone written since?

- ``FileStateStore`` (the default): today's atomic JSON file. One process owns the data
  folder (the ``AdapterStore`` flock), so nobody else writes and the revision is a
  counter kept in memory; ``shared`` is False.
- ``adapters.pg_registry_state.PostgresStateStore``: one row in PostgreSQL, shared by
  every gateway in front of the same replicas; ``shared`` is True.

Errors (both are ``RegistryError``)::

    StateConflictError       another writer saved first: reload, re-apply, save again
    RegistryUnavailableError the shared store cannot be reached (gateway: 503)
"""

from __future__ import annotations

from typing import Protocol

from adapters.errors import RegistryError
from adapters.manifest import RegistryFile, RegistryState


class StateConflictError(RegistryError):
    """``save`` lost a race: the stored revision is not the one the change was based on."""

    default_code = "registry_conflict"


class RegistryUnavailableError(RegistryError):
    """The shared registry store did not answer; the last state read is still served."""

    status_code = 503
    default_code = "registry_unavailable"


class RegistryStateStore(Protocol):
    """A ``RegistryState`` document with a revision that grows on every save.

    Concurrency rule: implementations are thread-safe; ``save`` is atomic (a crash or a
    lost race leaves the previous document whole).
    """

    @property
    def shared(self) -> bool:
        """True when other processes may write: readers must poll ``revision()``."""
        ...

    def load(self) -> tuple[int, RegistryState | None]: ...

    def save(self, expected_revision: int, state: RegistryState) -> int: ...

    def revision(self) -> int: ...

    def close(self) -> None: ...


class FileStateStore:
    """The registry JSON file of a data folder this process owns exclusively."""

    shared = False

    def __init__(self, file: RegistryFile) -> None:
        self.file = file
        self._revision = 0

    def load(self) -> tuple[int, RegistryState | None]:
        return self._revision, self.file.load()

    def save(self, expected_revision: int, state: RegistryState) -> int:
        if expected_revision != self._revision:
            raise StateConflictError(
                f"The registry changed (revision {self._revision}, expected {expected_revision})."
            )
        self.file.save(state)
        self._revision += 1
        return self._revision

    def revision(self) -> int:
        return self._revision

    def close(self) -> None:
        pass
