"""``UsageStore``: requests and tokens per tenant, key, model and adapter, batched.

Requests are aggregated in memory per minute; ``flush`` seals the aggregate into a
``UsageBatch`` with a fresh uuid and hands it to a ``UsageBackend``:

- ``SqliteUsageBackend`` (the default): one gateway, a SQLite file in its data folder.
- ``gateway.tenancy.pg_usage.PostgresUsageBackend``: several gateways, one PostgreSQL.
  Rows are keyed by the batch id, so a batch sent again after a lost commit
  acknowledgement is ignored by ``ON CONFLICT DO NOTHING``: never counted twice.

A batch the backend refused stays queued, unchanged (same id), and is sent again at
the next flush, before newer ones; new requests go into new batches. The queue is
bounded (``max_unsent_rows``): past it the oldest batches are dropped, counted in
``dropped_rows`` and logged, so an outage can cost memory only up to that bound.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from gateway.errors import GatewayError

logger = logging.getLogger(__name__)

Key = tuple[int, str, str, str, str]
"""(minute, tenant, key_id, model, adapter): ``key_id``/``adapter`` are "" when none."""

_GROUPS = "tenant, key_id, model, adapter"


def usage_query(
    table: str, placeholder: str, tenant: str | None, since_minute: int
) -> tuple[str, list[object]]:
    """The one usage query of every backend: rows since ``since_minute`` (of ``tenant``
    when given) summed per tenant, key, model and adapter, in that order; as SQL with
    ``placeholder`` (``?`` for SQLite, ``%s`` for PostgreSQL) and its parameters."""
    sql = (
        f"SELECT {_GROUPS}, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens) "
        f"FROM {table} WHERE minute >= {placeholder}"
    )
    params: list[object] = [since_minute]
    if tenant is not None:
        sql += f" AND tenant = {placeholder}"
        params.append(tenant)
    return f"{sql} GROUP BY {_GROUPS} ORDER BY {_GROUPS}", params


class UsageUnavailableError(GatewayError):
    """503: the usage store did not answer; recorded usage stays queued in memory.

    It extends ``gateway.errors``' tree next to ``EngineUnavailableError``::

        GatewayError
        └── UsageUnavailableError  503 service_unavailable  (code: usage_unavailable)
    """

    status_code: ClassVar[int] = 503
    error_type: ClassVar[str] = "service_unavailable"
    default_code: ClassVar[str | None] = "usage_unavailable"


@dataclass(frozen=True)
class UsageRow:
    tenant: str
    key_id: str
    model: str
    adapter: str
    requests: int
    prompt_tokens: int
    completion_tokens: int

    @classmethod
    def from_db(cls, row: Sequence[Any]) -> UsageRow:
        """A row of ``usage_query`` (PostgreSQL sums come back as ``Decimal``)."""
        tenant, key_id, model, adapter, requests, prompt, completion = row
        return cls(tenant, key_id, model, adapter, int(requests), int(prompt), int(completion))


@dataclass(frozen=True)
class UsageBatch:
    """Sealed usage of one flush: never changes after it gets its id."""

    rows: dict[Key, tuple[int, int, int]]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


class UsageBackend(Protocol):
    """Where batches go. ``write`` is atomic (all rows or none) and raises
    ``UsageUnavailableError`` when the store cannot be reached."""

    def write(self, batch: UsageBatch) -> None: ...

    def query(self, tenant: str | None, since_minute: int) -> list[UsageRow]: ...

    def close(self) -> None: ...


class SqliteUsageBackend:
    """One gateway's usage in SQLite; writes add to per-minute rows.

    Concurrency rule: one connection behind a lock; calls block on the disk, so the
    gateway calls them off the event loop.
    """

    SCHEMA = """
    CREATE TABLE IF NOT EXISTS usage (
        minute INTEGER NOT NULL,
        tenant TEXT NOT NULL,
        key_id TEXT NOT NULL,
        model TEXT NOT NULL,
        adapter TEXT NOT NULL,
        requests INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        PRIMARY KEY (minute, tenant, key_id, model, adapter)
    )
    """
    UPSERT = """
    INSERT INTO usage VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (minute, tenant, key_id, model, adapter) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens
    """

    def __init__(self, path: Path | None = None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(self.SCHEMA)
        self._lock = threading.Lock()

    def write(self, batch: UsageBatch) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(self.UPSERT, [(*k, *v) for k, v in batch.rows.items()])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def query(self, tenant: str | None, since_minute: int) -> list[UsageRow]:
        sql, params = usage_query("usage", "?", tenant, since_minute)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [UsageRow.from_db(row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class UsageStore:
    """Aggregates in memory per minute; ``flush`` writes sealed batches to the backend.

    ``UsageStore(path)`` keeps usage in SQLite at ``path`` (memory when None);
    ``UsageStore(backend=...)`` in another backend.

    Concurrency rule: ``record`` may be called from any thread, the event loop included:
    it takes only the batch lock, which is never held across I/O. ``flush``, ``query``
    and ``close`` take a second lock around the backend (writes may block on the disk
    or the network), so call them off the event loop (``asyncio.to_thread``).
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        backend: UsageBackend | None = None,
        max_unsent_rows: int = 100_000,
    ) -> None:
        self.backend: UsageBackend = backend or SqliteUsageBackend(path)
        self.max_unsent_rows = max_unsent_rows
        self.dropped_rows = 0
        self._lock = threading.Lock()  # the pending aggregate only
        self._flush_lock = threading.Lock()  # the unsent queue and the backend
        self._pending: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0])
        self._unsent: deque[UsageBatch] = deque()

    def record(
        self,
        *,
        tenant: str,
        key_id: str | None,
        model: str,
        adapter: str | None,
        prompt_tokens: int,
        completion_tokens: int,
        now: float | None = None,
    ) -> None:
        minute = int((now if now is not None else time.time()) // 60)
        key = (minute, tenant, key_id or "", model, adapter or "")
        with self._lock:
            row = self._pending[key]
            row[0] += 1
            row[1] += prompt_tokens
            row[2] += completion_tokens

    @property
    def unsent_rows(self) -> int:
        """Rows sealed in batches the backend has not accepted yet."""
        return sum(len(b.rows) for b in list(self._unsent))

    def flush(self) -> int:
        """Seal what was recorded and send every queued batch, oldest first.

        Returns the rows written. A failure keeps the batch that failed and those after
        it (they are sent again next time) and raises ``UsageUnavailableError``.
        """
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, defaultdict(lambda: [0, 0, 0])
            if pending:
                rows = {k: (v[0], v[1], v[2]) for k, v in pending.items()}
                self._unsent.append(UsageBatch(rows))
                self._bound_queue()
            written = 0
            while self._unsent:
                batch = self._unsent[0]
                self.backend.write(batch)  # raises: the batch stays first in the queue
                self._unsent.popleft()
                written += len(batch.rows)
            return written

    def query(self, *, tenant: str | None = None, since: float | None = None) -> list[UsageRow]:
        """Usage summed per tenant, key, model and adapter (every gateway's, when shared)."""
        self.flush()
        with self._flush_lock:
            return self.backend.query(tenant, int(since // 60) if since else 0)

    def close(self) -> None:
        """Flush (what cannot be written now is logged as lost) and close the backend."""
        try:
            self.flush()
        except Exception as exc:
            logger.error("usage not written at shutdown, %d rows lost: %s", self.unsent_rows, exc)
        with self._flush_lock:
            self.backend.close()

    def _bound_queue(self) -> None:
        """Drop the oldest batches past ``max_unsent_rows``; call with the flush lock."""
        total = sum(len(b.rows) for b in self._unsent)
        while total > self.max_unsent_rows and len(self._unsent) > 1:
            dropped = self._unsent.popleft()
            total -= len(dropped.rows)
            self.dropped_rows += len(dropped.rows)
            logger.error(
                "usage store unreachable for too long: dropped %d usage rows (batch %s); "
                "%d dropped since start",
                len(dropped.rows),
                dropped.id,
                self.dropped_rows,
            )
