"""``PostgresStateStore``: the registry document in one PostgreSQL row, shared by gateways.

Table (created if missing, idempotently)::

    loragate_registry(key text PRIMARY KEY, revision bigint, state jsonb, updated_at)

``save`` is a compare-and-swap: ``UPDATE ... SET revision = revision + 1 WHERE key = %s
AND revision = %s``; no row updated means another gateway saved first
(``StateConflictError``). The first save inserts with ``ON CONFLICT DO NOTHING`` for
the same reason. Every commit is durable (PostgreSQL's WAL, fsync'ed) before ``save``
returns, so a ``lora_int_id`` handed out is never handed out again, even after a crash.

The URL may hold a password: it never appears in a message this module raises.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from adapters.common.pg_connection import PostgresConnection
from adapters.errors import RegistryCorruptError
from adapters.manifest import RegistryState
from adapters.registry_state_store import RegistryUnavailableError, StateConflictError

SCHEMA = """
CREATE TABLE IF NOT EXISTS loragate_registry (
    key text PRIMARY KEY,
    revision bigint NOT NULL,
    state jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
)
"""


class PostgresStateStore:
    """One registry document (``key``) in PostgreSQL.

    Concurrency rule: thread-safe; each call is one short autocommit statement on one
    ``PostgresConnection`` (no transaction is ever left open), which reconnects by
    itself when PostgreSQL comes back. ``timeout`` bounds connecting and each statement.
    """

    shared = True

    def __init__(self, url: str, *, key: str = "default", timeout: float = 5.0) -> None:
        self._key = key
        self._db = PostgresConnection(
            url,
            timeout=timeout,
            schema=[SCHEMA],
            unavailable=RegistryUnavailableError,
            what="shared adapter registry",
        )
        self._db.run(lambda conn: None)  # connect now: a wrong URL fails at start-up

    def load(self) -> tuple[int, RegistryState | None]:
        row = self._db.run(
            lambda c: c.execute(
                "SELECT revision, state FROM loragate_registry WHERE key = %s", (self._key,)
            ).fetchone()
        )
        if row is None:
            return 0, None
        revision, raw = row
        try:
            return int(revision), RegistryState.model_validate(raw)
        except (ValueError, ValidationError) as exc:
            raise RegistryCorruptError(
                f"The registry row {self._key!r} in PostgreSQL is corrupt and was left "
                f"untouched. Cause: {exc}"
            ) from None

    def save(self, expected_revision: int, state: RegistryState) -> int:
        body = json.dumps(state.model_dump(mode="json"))
        if expected_revision == 0:
            sql = (
                "INSERT INTO loragate_registry (key, revision, state) VALUES (%s, 1, %s) "
                "ON CONFLICT (key) DO NOTHING RETURNING revision"
            )
            params: tuple[object, ...] = (self._key, body)
        else:
            sql = (
                "UPDATE loragate_registry SET revision = revision + 1, state = %s, "
                "updated_at = now() WHERE key = %s AND revision = %s RETURNING revision"
            )
            params = (body, self._key, expected_revision)
        # Not retried: whether a cut-off save committed is for the caller to find out.
        row = self._db.run(lambda c: c.execute(sql, params).fetchone(), idempotent=False)
        if row is None:
            raise StateConflictError(
                f"Another gateway changed the registry (expected revision {expected_revision})."
            )
        return int(row[0])

    def revision(self) -> int:
        row = self._db.run(
            lambda c: c.execute(
                "SELECT revision FROM loragate_registry WHERE key = %s", (self._key,)
            ).fetchone()
        )
        return 0 if row is None else int(row[0])

    def close(self) -> None:
        self._db.close()
