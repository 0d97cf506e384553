"""``UsageStore``: requests, tokens, cost and engine time per tenant, key, model and
adapter, batched.

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

import asyncio
import logging
import sqlite3
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol

from gateway.errors import GatewayError
from gateway.settings.tenancy import BudgetPeriod
from gateway.tenancy.budget import BudgetDraw, Spend, window_of

logger = logging.getLogger(__name__)

Key = tuple[int, str, str, str, str]
"""(minute, tenant, key_id, model, adapter): ``key_id``/``adapter`` are "" when none."""

Values = tuple[int, int, int, float, float]
"""(requests, prompt_tokens, completion_tokens, cost, engine_seconds) of one ``Key``."""

_GROUPS = "tenant, key_id, model, adapter"


def usage_query(
    table: str,
    placeholder: str,
    tenant: str | None,
    since_minute: int,
    bucket_minutes: int | None = None,
) -> tuple[str, list[object]]:
    """The one usage query of every backend: rows since ``since_minute`` (of ``tenant``
    when given) summed per tenant, key, model and adapter, in that order; as SQL with
    ``placeholder`` (``?`` for SQLite, ``%s`` for PostgreSQL) and its parameters.

    With ``bucket_minutes``, the sums are split into buckets of that many minutes: each
    row starts with its bucket's first minute, rows in bucket order. ``minute / n`` of
    two integers is integer division in SQLite and PostgreSQL."""
    groups = _GROUPS
    select = ""
    if bucket_minutes is not None:
        n = int(bucket_minutes)
        select, groups = f"(minute / {n}) * {n} AS bucket, ", f"bucket, {_GROUPS}"
    sql = (
        f"SELECT {select}{_GROUPS}, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), "
        f"SUM(cost), SUM(engine_seconds) FROM {table} WHERE minute >= {placeholder}"
    )
    params: list[object] = [since_minute]
    if tenant is not None:
        sql += f" AND tenant = {placeholder}"
        params.append(tenant)
    return f"{sql} GROUP BY {groups} ORDER BY {groups}", params


class UsageBucket(StrEnum):
    """The width of one point of a usage series; buckets start at UTC hour or day
    boundaries (unix time is UTC, and a UTC day is 1440 whole minutes)."""

    HOUR = "hour"
    DAY = "day"

    @property
    def minutes(self) -> int:
        return 60 if self is UsageBucket.HOUR else 1440


def spent_query(
    table: str, placeholder: str, tenant: str | None, key_id: str | None, since_minute: int
) -> tuple[str, list[object]]:
    """Tokens (prompt + completion) and cost since ``since_minute`` of one tenant, one
    key, or both, as SQL with ``placeholder`` and its parameters."""
    sql = (
        "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0), COALESCE(SUM(cost), 0) "
        f"FROM {table} WHERE minute >= {placeholder}"
    )
    params: list[object] = [since_minute]
    if tenant is not None:
        sql += f" AND tenant = {placeholder}"
        params.append(tenant)
    if key_id is not None:
        sql += f" AND key_id = {placeholder}"
        params.append(key_id)
    return sql, params


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
    cost: float = 0.0
    """In the pricing currency (``pricing``), at the prices when each request ran."""
    engine_seconds: float = 0.0
    """Engine time: from each prompt's hand-over to the engine to its last output."""

    @classmethod
    def from_db(cls, row: Sequence[Any]) -> UsageRow:
        """A row of ``usage_query`` (PostgreSQL sums come back as ``Decimal``)."""
        tenant, key_id, model, adapter, requests, prompt, completion, cost, seconds = row
        return cls(
            tenant,
            key_id,
            model,
            adapter,
            int(requests),
            int(prompt),
            int(completion),
            float(cost),
            float(seconds),
        )


@dataclass(frozen=True)
class UsagePoint:
    """One bucket of a usage series: ``row`` summed from ``start`` (unix seconds, UTC)
    for one bucket width."""

    start: int
    row: UsageRow

    @classmethod
    def from_db(cls, row: Sequence[Any]) -> UsagePoint:
        """A row of ``usage_query`` with buckets: the bucket's first minute, then a usage row."""
        return cls(int(row[0]) * 60, UsageRow.from_db(row[1:]))

    def as_json(self) -> dict[str, Any]:
        return {"start": self.start, **self.row.__dict__}


@dataclass(frozen=True)
class UsageBatch:
    """Sealed usage of one flush: never changes after it gets its id."""

    rows: dict[Key, Values]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


class UsageBackend(Protocol):
    """Where batches go. ``write`` is atomic (all rows or none) and raises
    ``UsageUnavailableError`` when the store cannot be reached."""

    def write(self, batch: UsageBatch) -> None: ...

    def query(self, tenant: str | None, since_minute: int) -> list[UsageRow]: ...

    def series(
        self, tenant: str | None, since_minute: int, bucket_minutes: int
    ) -> list[UsagePoint]: ...

    def spent(self, tenant: str | None, key_id: str | None, since_minute: int) -> Spend: ...

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
        cost REAL NOT NULL DEFAULT 0,
        engine_seconds REAL NOT NULL DEFAULT 0,
        PRIMARY KEY (minute, tenant, key_id, model, adapter)
    )
    """
    ADDED_COLUMNS: ClassVar[tuple[tuple[str, str], ...]] = (
        ("cost", "REAL NOT NULL DEFAULT 0"),
        ("engine_seconds", "REAL NOT NULL DEFAULT 0"),
    )
    """Columns that opening a usage file adds where they are missing."""
    UPSERT = """
    INSERT INTO usage (minute, tenant, key_id, model, adapter, requests, prompt_tokens,
        completion_tokens, cost, engine_seconds) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (minute, tenant, key_id, model, adapter) DO UPDATE SET
        requests = requests + excluded.requests,
        prompt_tokens = prompt_tokens + excluded.prompt_tokens,
        completion_tokens = completion_tokens + excluded.completion_tokens,
        cost = cost + excluded.cost,
        engine_seconds = engine_seconds + excluded.engine_seconds
    """

    def __init__(self, path: Path | None = None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(self.SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(usage)")}
        for name, kind in self.ADDED_COLUMNS:
            if name not in columns:
                self._db.execute(f"ALTER TABLE usage ADD COLUMN {name} {kind}")
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

    def series(
        self, tenant: str | None, since_minute: int, bucket_minutes: int
    ) -> list[UsagePoint]:
        sql, params = usage_query("usage", "?", tenant, since_minute, bucket_minutes)
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        return [UsagePoint.from_db(row) for row in rows]

    def spent(self, tenant: str | None, key_id: str | None, since_minute: int) -> Spend:
        sql, params = spent_query("usage", "?", tenant, key_id, since_minute)
        with self._lock:
            tokens, cost = self._db.execute(sql, params).fetchone()
        return Spend(int(tokens), float(cost))

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
        self._pending: dict[Key, list[float]] = defaultdict(_empty_row)
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
        cost: float = 0.0,
        engine_seconds: float = 0.0,
        now: float | None = None,
    ) -> None:
        minute = int((now if now is not None else time.time()) // 60)
        key = (minute, tenant, key_id or "", model, adapter or "")
        with self._lock:
            row = self._pending[key]
            row[0] += 1
            row[1] += prompt_tokens
            row[2] += completion_tokens
            row[3] += cost
            row[4] += engine_seconds

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
                pending, self._pending = self._pending, defaultdict(_empty_row)
            if pending:
                rows = {
                    k: (int(v[0]), int(v[1]), int(v[2]), v[3], v[4]) for k, v in pending.items()
                }
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

    def series(
        self, bucket: UsageBucket, *, tenant: str | None = None, since: float | None = None
    ) -> list[UsagePoint]:
        """``query`` per UTC hour or day: the points of a spend-over-time chart."""
        self.flush()
        with self._flush_lock:
            return self.backend.series(tenant, int(since // 60) if since else 0, bucket.minutes)

    def spent(
        self, *, tenant: str | None = None, key_id: str | None = None, since: float = 0.0
    ) -> Spend:
        """Tokens (prompt + completion) and cost since ``since`` (unix seconds) of a
        tenant, a key, or both (every gateway's, when shared): what budgets count.
        Blocks on the backend: call it off the event loop."""
        self.flush()
        with self._flush_lock:
            return self.backend.spent(tenant, key_id, int(since // 60))

    def spent_in(
        self,
        period: BudgetPeriod,
        *,
        tenant: str | None = None,
        key_id: str | None = None,
        now: float | None = None,
    ) -> Spend:
        """Spend of a tenant or key in the current UTC day or month (a key's ``spent``
        next to its budget). Blocks on the backend: call it off the event loop."""
        window = window_of(period, time.time() if now is None else now)
        return self.spent(tenant=tenant, key_id=key_id, since=window.start)

    async def budget_seed(self, draw: BudgetDraw) -> Spend:
        """Where a budget's counter starts: the spend recorded in its period so far."""
        kind, _, name = draw.subject.partition(":")
        who = {"tenant": name} if kind == "tenant" else {"key_id": name}
        return await asyncio.to_thread(self.spent, since=draw.window.start, **who)

    def close(self) -> None:
        """Flush (what cannot be written now is logged as lost) and close the backend."""
        try:
            self.flush()
        except Exception:
            logger.exception("usage not written at shutdown, %d rows lost", self.unsent_rows)
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


def _empty_row() -> list[float]:
    return [0, 0, 0, 0.0, 0.0]
