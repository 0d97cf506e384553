"""``ResponseStore`` backends: owner scoping, retention, purge; SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.tenancy.pg_response_store import PostgresResponseStore
from gateway.tenancy.response_store import ResponseStore, SqliteResponseStore, StoredResponse

Open = Callable[[float], ResponseStore]


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]  # a server
)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Open]:
    opened: list[ResponseStore] = []

    def open_(retention: float) -> ResponseStore:
        store: ResponseStore
        if request.param == "sqlite":
            store = SqliteResponseStore(tmp_path / "responses.db", retention_seconds=retention)
        else:
            url = request.getfixturevalue("pg_url")
            store = PostgresResponseStore(url, retention_seconds=retention)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def record(rid: str, owner: str = "acme", created: float | None = None) -> StoredResponse:
    return StoredResponse(
        id=rid,
        owner=owner,
        created_at=time.time() if created is None else created,
        response={"id": rid, "output": [{"type": "message", "n": 1}]},
        input_items=[{"id": "msg_1", "type": "message", "role": "user", "content": []}],
        history=[{"id": "msg_0", "type": "message", "role": "user", "content": []}],
    )


def test_records_are_their_owners_alone(open_store: Open) -> None:
    store = open_store(3600)
    store.put(record("resp_1"))
    got = store.get("acme", "resp_1")
    assert got is not None and got == record("resp_1", created=got.created_at)
    assert [i.get("id") for i in got.turns()] == ["msg_0", "msg_1", None]
    assert store.get("globex", "resp_1") is None
    assert store.delete("globex", "resp_1") is False
    assert store.delete("acme", "resp_1") is True
    assert store.get("acme", "resp_1") is None and store.delete("acme", "resp_1") is False


def test_expired_records_are_gone_and_purged(open_store: Open) -> None:
    store = open_store(60)
    store.put(record("resp_old", created=time.time() - 120))
    store.put(record("resp_new"))
    assert store.get("acme", "resp_old") is None
    assert store.delete("acme", "resp_old") is False
    assert store.purge() == 1
    assert store.get("acme", "resp_new") is not None


def test_sqlite_keeps_records_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "responses.db"
    first = SqliteResponseStore(path, retention_seconds=3600)
    first.put(record("resp_1"))
    first.close()
    again = SqliteResponseStore(path, retention_seconds=3600)
    assert again.get("acme", "resp_1") is not None
    again.close()
