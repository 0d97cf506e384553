"""``GET /admin/usage?bucket=hour|day``: usage per UTC hour or day, what the console's
spend chart draws. The same series from SQLite and from a real PostgreSQL; over HTTP
with OpenAI-style errors for a bad bucket or a range too wide."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.api.routes.operations import MAX_SERIES_BUCKETS
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.tenancy.pg_usage import PostgresUsageBackend
from gateway.tenancy.usage import UsageBucket, UsagePoint, UsageStore
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit, fake_settings, run_fake_gateway

HOUR = 3600
DAY = 86400
T0 = 1_796_083_200  # 2026-12-01T00:00:00Z: a UTC day (and hour) boundary


def record_spread(store: UsageStore, now: float = T0) -> None:
    """Five requests: three in the first hour (acme twice, globex once), one in the
    next hour, one on the next day."""
    store.record(
        tenant="acme",
        key_id="k1",
        model="base",
        adapter=None,
        prompt_tokens=10,
        completion_tokens=1,
        cost=0.5,
        engine_seconds=0.25,
        now=now,
    )
    store.record(
        tenant="globex",
        key_id=None,
        model="base",
        adapter="pirate",
        prompt_tokens=20,
        completion_tokens=2,
        now=now + 60,
    )
    store.record(
        tenant="acme",
        key_id="k1",
        model="base",
        adapter=None,
        prompt_tokens=30,
        completion_tokens=3,
        cost=0.25,
        now=now + 59 * 60,
    )
    store.record(
        tenant="acme",
        key_id="k1",
        model="base",
        adapter=None,
        prompt_tokens=40,
        completion_tokens=4,
        now=now + HOUR,
    )
    store.record(
        tenant="acme",
        key_id="k2",
        model="base",
        adapter="pirate",
        prompt_tokens=50,
        completion_tokens=5,
        now=now + DAY + 5,
    )


def shape(points: list[UsagePoint]) -> list[tuple[int, str, str, str, int, int, int, float]]:
    return [
        (
            p.start,
            p.row.tenant,
            p.row.key_id,
            p.row.adapter,
            p.row.requests,
            p.row.prompt_tokens,
            p.row.completion_tokens,
            round(p.row.cost, 6),
        )
        for p in points
    ]


EXPECTED_HOURS = [
    (T0, "acme", "k1", "", 2, 40, 4, 0.75),
    (T0, "globex", "", "pirate", 1, 20, 2, 0.0),
    (T0 + HOUR, "acme", "k1", "", 1, 40, 4, 0.0),
    (T0 + DAY, "acme", "k2", "pirate", 1, 50, 5, 0.0),
]
EXPECTED_DAYS = [
    (T0, "acme", "k1", "", 3, 80, 8, 0.75),
    (T0, "globex", "", "pirate", 1, 20, 2, 0.0),
    (T0 + DAY, "acme", "k2", "pirate", 1, 50, 5, 0.0),
]


def check_series(store: UsageStore) -> None:
    record_spread(store)
    assert shape(store.series(UsageBucket.HOUR)) == EXPECTED_HOURS
    assert shape(store.series(UsageBucket.DAY)) == EXPECTED_DAYS
    assert shape(store.series(UsageBucket.DAY, tenant="globex")) == [EXPECTED_DAYS[1]]
    # ``since`` counts whole minutes: the bucket of T0 + 1 h on, not the earlier ones.
    assert shape(store.series(UsageBucket.HOUR, since=T0 + HOUR)) == EXPECTED_HOURS[2:]
    [first] = store.series(UsageBucket.HOUR, tenant="acme", since=T0)[:1]
    assert first.row.engine_seconds == pytest.approx(0.25)
    # The sums without buckets are the sums of the buckets.
    plain = {(r.tenant, r.key_id): r.requests for r in store.query()}
    assert plain == {("acme", "k1"): 3, ("acme", "k2"): 1, ("globex", ""): 1}


def test_sqlite_series_per_hour_and_day(tmp_path: Path) -> None:
    store = UsageStore(tmp_path / "usage.sqlite")
    try:
        check_series(store)
    finally:
        store.close()


def test_postgres_series_matches_sqlite(pg_url: str) -> None:
    store = UsageStore(backend=PostgresUsageBackend(pg_url, gateway="gw", timeout=5))
    try:
        check_series(store)
    finally:
        store.close()


# --- over HTTP ------------------------------------------------------------------------


@pytest.fixture
async def gateway(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[FakeGateway]:
    async with run_fake_gateway(fake_settings(fake_kit, tmp_path / "registry"), renderer) as gw:
        yield gw


ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@pytest.mark.asyncio
async def test_usage_by_hour_over_http(gateway: FakeGateway) -> None:
    now = time.time()
    this_hour = int(now // HOUR * HOUR)
    record_spread(gateway.app.state.gateway.usage, now=this_hour - DAY)
    answer = await gateway.client.get(
        "/admin/usage", params={"bucket": "hour", "since": this_hour - 2 * DAY}, headers=ADMIN
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["bucket"] == "hour" and body["object"] == "list" and "budgets" in body
    starts = [row["start"] for row in body["data"]]
    assert starts == [this_hour - DAY, this_hour - DAY, this_hour - DAY + HOUR, this_hour]
    assert body["data"][0] == {
        "start": this_hour - DAY,
        "tenant": "acme",
        "key_id": "k1",
        "model": "base",
        "adapter": "",
        "requests": 2,
        "prompt_tokens": 40,
        "completion_tokens": 4,
        "cost": 0.75,
        "engine_seconds": 0.25,
    }
    # Without ``since``: the last MAX_SERIES_BUCKETS days, which hold all of it.
    by_day = (
        await gateway.client.get("/admin/usage", params={"bucket": "day"}, headers=ADMIN)
    ).json()
    assert sum(row["requests"] for row in by_day["data"]) == 5
    assert all(row["start"] % DAY == 0 for row in by_day["data"])
    # Without ``bucket``: the sums as before, no ``start``.
    plain = (await gateway.client.get("/admin/usage", headers=ADMIN)).json()
    assert "bucket" not in plain and all("start" not in row for row in plain["data"])


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("params", "param", "fragment"),
    [
        ({"bucket": "week"}, "bucket", "hour"),
        ({"bucket": ""}, "bucket", "hour"),
        ({"bucket": "hour", "since": 0}, "since", f"at most {MAX_SERIES_BUCKETS} buckets"),
        ({"bucket": "day", "since": "nan"}, "since", ""),
    ],
)
async def test_bad_series_parameters_get_openai_errors(
    gateway: FakeGateway, params: dict[str, str | int], param: str, fragment: str
) -> None:
    answer = await gateway.client.get("/admin/usage", params=params, headers=ADMIN)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert error["param"].endswith(param)
    assert fragment in error["message"]


@pytest.mark.asyncio
async def test_series_needs_the_admin_key(gateway: FakeGateway) -> None:
    answer = await gateway.client.get("/admin/usage", params={"bucket": "hour"})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "authentication_error"
