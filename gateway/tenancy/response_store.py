"""``ResponseStore``: the responses ``/v1/responses`` keeps (``store: true``), per owner.

One record per response: the response object, the request's own input items, and the
earlier turns of its chain (what ``previous_response_id`` continues from). Two backends,
picked as the usage store's are (``gateway.state.open_response_store``):

- ``SqliteResponseStore`` (the default): one gateway, ``responses.db`` in its data folder.
- ``gateway.tenancy.pg_response_store.PostgresResponseStore``: every gateway that shares
  ``shared_store``, one table.

A record is its owner's alone: every read and delete names the owner, so another
tenant's id is indistinguishable from an unknown one. Records expire after the
retention; expired ones are never returned and are purged at most once a minute, when a
new one is written.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from gateway.errors import GatewayError

PURGE_EVERY_SECONDS = 60.0


class ResponseStoreUnavailableError(GatewayError):
    """503: the store of responses did not answer.

    It extends ``gateway.errors``' tree next to ``EngineUnavailableError``::

        GatewayError
        └── ResponseStoreUnavailableError  503 service_unavailable  (code: store_unavailable)
    """

    status_code: ClassVar[int] = 503
    error_type: ClassVar[str] = "service_unavailable"
    default_code: ClassVar[str | None] = "store_unavailable"


@dataclass(frozen=True)
class StoredResponse:
    """One stored response, as JSON-ready values."""

    id: str
    owner: str
    """The tenant label of the caller that created it (``Caller.label``)."""
    created_at: float
    response: dict[str, Any]
    """The ``Response`` object, as ``GET /v1/responses/{id}`` returns it."""
    input_items: list[dict[str, Any]]
    """This request's input items, with their ids (``/input_items``)."""
    history: list[dict[str, Any]]
    """The items of the earlier turns of the chain (instructions excluded, as OpenAI)."""

    def body(self) -> str:
        return json.dumps(
            {"response": self.response, "input_items": self.input_items, "history": self.history},
            ensure_ascii=False,
            separators=(",", ":"),
        )

    @classmethod
    def from_row(cls, response_id: str, owner: str, created_at: float, body: str) -> StoredResponse:
        data = json.loads(body)
        return cls(
            response_id, owner, created_at, data["response"], data["input_items"], data["history"]
        )

    def turns(self) -> list[dict[str, Any]]:
        """The items a response continuing this one starts from: the earlier turns, this
        request's input, then its output."""
        return [*self.history, *self.input_items, *self.response.get("output", [])]


class ResponseStore(Protocol):
    """Where stored responses live. Every call blocks (disk or network): call it off
    the event loop. Failures to reach the store raise ``ResponseStoreUnavailableError``."""

    def put(self, record: StoredResponse) -> None: ...

    def get(self, owner: str, response_id: str) -> StoredResponse | None:
        """The record, or None: unknown, expired, deleted or another owner's alike."""
        ...

    def delete(self, owner: str, response_id: str) -> bool: ...

    def purge(self) -> int:
        """Remove expired records; returns how many."""
        ...

    def close(self) -> None: ...


class SqliteResponseStore:
    """Stored responses of one gateway in SQLite.

    Concurrency rule: one connection behind a lock; thread-safe, blocking.
    """

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS responses (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        body TEXT NOT NULL
    )
    """

    def __init__(self, path: Path | None, *, retention_seconds: float) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(self.SCHEMA)
        self._db.execute("CREATE INDEX IF NOT EXISTS responses_expiry ON responses (expires_at)")
        self._retention = retention_seconds
        self._lock = threading.Lock()
        self._purged_at = 0.0

    def put(self, record: StoredResponse) -> None:
        now = time.time()
        if now - self._purged_at >= PURGE_EVERY_SECONDS:
            self.purge()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.owner,
                    record.created_at,
                    record.created_at + self._retention,
                    record.body(),
                ),
            )

    def get(self, owner: str, response_id: str) -> StoredResponse | None:
        with self._lock:
            row = self._db.execute(
                "SELECT created_at, body FROM responses "
                "WHERE id = ? AND owner = ? AND expires_at > ?",
                (response_id, owner, time.time()),
            ).fetchone()
        return None if row is None else StoredResponse.from_row(response_id, owner, *row)

    def delete(self, owner: str, response_id: str) -> bool:
        with self._lock:
            cur = self._db.execute(
                "DELETE FROM responses WHERE id = ? AND owner = ? AND expires_at > ?",
                (response_id, owner, time.time()),
            )
        return cur.rowcount > 0

    def purge(self) -> int:
        now = time.time()
        with self._lock:
            self._purged_at = now
            cur = self._db.execute("DELETE FROM responses WHERE expires_at <= ?", (now,))
        return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
