"""``UsageStore``: requests and tokens per tenant, key, model and adapter, in SQLite."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

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

Key = tuple[int, str, str, str, str]


@dataclass(frozen=True)
class UsageRow:
    tenant: str
    key_id: str
    model: str
    adapter: str
    requests: int
    prompt_tokens: int
    completion_tokens: int


class UsageStore:
    """Aggregates in memory per minute; ``flush`` writes the batch in one transaction.

    Concurrency rule: ``record`` may be called from any thread, the event loop included:
    it takes only the batch lock, which is never held across I/O. ``flush``, ``query``
    and ``close`` take a second lock around SQLite (commits may block on the disk), so
    call them off the event loop (``asyncio.to_thread``) in a server.
    """

    def __init__(self, path: Path | None = None) -> None:
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(
            str(path) if path else ":memory:", check_same_thread=False, isolation_level=None
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(SCHEMA)
        self._lock = threading.Lock()  # the pending batch only
        self._db_lock = threading.Lock()  # the SQLite connection
        self._pending: dict[Key, list[int]] = defaultdict(lambda: [0, 0, 0])

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

    def flush(self) -> int:
        with self._db_lock:
            with self._lock:
                batch, self._pending = self._pending, defaultdict(lambda: [0, 0, 0])
            if batch:
                self._db.execute("BEGIN")
                self._db.executemany(UPSERT, [(*k, *v) for k, v in batch.items()])
                self._db.execute("COMMIT")
        return len(batch)

    def query(self, *, tenant: str | None = None, since: float | None = None) -> list[UsageRow]:
        self.flush()
        sql = (
            "SELECT tenant, key_id, model, adapter, SUM(requests), SUM(prompt_tokens), "
            "SUM(completion_tokens) FROM usage WHERE minute >= ?"
        )
        params: list[object] = [int(since // 60) if since else 0]
        if tenant is not None:
            sql += " AND tenant = ?"
            params.append(tenant)
        sql += " GROUP BY tenant, key_id, model, adapter ORDER BY tenant, key_id, model, adapter"
        with self._db_lock:
            rows = self._db.execute(sql, params).fetchall()
        return [UsageRow(*row) for row in rows]

    def close(self) -> None:
        self.flush()
        with self._db_lock:
            self._db.close()
