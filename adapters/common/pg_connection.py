"""``PostgresConnection``: one reconnecting PostgreSQL connection for the shared stores.

Used by the registry's state store and the gateway's usage backend (the gateway may
import ``adapters``; not the other way round). psycopg is imported only when one is
built: a single gateway never needs it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

from adapters.common.credential_redaction import redact_credentials

T = TypeVar("T")


class PostgresConnection:
    """Runs ``fn(connection)`` calls one at a time on an autocommit connection.

    * Connects lazily and again after any connection failure, so it recovers by itself
      when PostgreSQL comes back; ``schema`` statements run once per process (they must
      be idempotent: ``CREATE ... IF NOT EXISTS``).
    * A call that fails on a connection opened earlier (the server restarted since:
      the first statement finds it closed) is retried once on a fresh connection if
      ``idempotent``; a non-idempotent call raises, its outcome unknown to the caller.
    * Every failure to reach the server is raised as ``unavailable(message)``, with the
      URL's credentials masked; the URL itself is never put in a message.

    Concurrency rule: a lock serialises calls (one connection, short statements), so it
    is thread-safe; ``timeout`` bounds connecting and each statement.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        schema: Sequence[str],
        unavailable: Callable[[str], Exception],
        what: str,
    ) -> None:
        import psycopg

        self._psycopg = psycopg
        self._url = url
        self._timeout = timeout
        self._schema = schema
        self._unavailable = unavailable
        self._what = what
        self._lock = threading.Lock()
        self._conn: Any = None
        self._schema_ready = False

    def run(self, fn: Callable[[Any], T], *, idempotent: bool = True) -> T:
        psycopg = self._psycopg
        with self._lock:
            for attempt in (1, 2):
                reused = self._conn is not None
                try:
                    return fn(self._connection())
                except psycopg.errors.QueryCanceled:
                    # statement_timeout: the server is up and the connection usable; a
                    # slow statement is not a reason to reconnect and run it again.
                    raise self._unavailable(
                        f"The {self._what} (PostgreSQL) did not answer within {self._timeout:g} s"
                    ) from None
                except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                    self._drop()
                    if reused and idempotent and attempt == 1:
                        continue
                    raise self._unavailable(
                        f"The {self._what} (PostgreSQL) is unreachable: "
                        f"{redact_credentials(str(exc))}"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _connection(self) -> Any:
        psycopg = self._psycopg
        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(
                    self._url, autocommit=True, connect_timeout=max(1, round(self._timeout))
                )
            except psycopg.ProgrammingError:
                # libpq's URL parser quotes the token it cannot read, which may be the
                # password: say only that the URL is invalid.
                raise self._unavailable(
                    f"The {self._what}: the PostgreSQL URL is invalid (not shown: it may "
                    "hold a password)"
                ) from None
            # Not ``options=``: it would replace options the URL carries (search_path).
            self._conn.execute(
                "SELECT set_config('statement_timeout', %s, false)",
                (str(int(self._timeout * 1000)),),
            )
        if not self._schema_ready:
            for statement in self._schema:
                # Two gateways creating it at once: one fails, and it exists now.
                with suppress(psycopg.errors.UniqueViolation):
                    self._conn.execute(statement)
            self._schema_ready = True
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
            self._conn = None
