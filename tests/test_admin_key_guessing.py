"""Guessing the admin key: every wrong key is counted (``loragate_rejections_total``
``reason="admin_key"``) and logged with the client's address, never the key; past a
few failures a client waits, doubling each time (429 with ``Retry-After``), while the
real admin calling from another address is not held back."""

from __future__ import annotations

import logging

import httpx
import pytest
from pydantic import SecretStr

from gateway.errors import AuthenticationError, RateLimitError
from gateway.tenancy.admin_guard import (
    FREE_FAILURES,
    MAX_CLIENTS,
    WINDOW_SECONDS,
    AdminGuard,
    KeyGuessing,
    client_group,
)
from tests.conftest import ADMIN_KEY, FakeGateway

WRONG = "Bearer wrong-key-that-must-never-be-logged"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guard_with_clock() -> tuple[AdminGuard, Clock]:
    clock = Clock()
    return AdminGuard(SecretStr(ADMIN_KEY), clock=clock), clock


def test_past_the_free_failures_a_client_waits_doubling_each_time():
    guard, clock = guard_with_clock()
    for _ in range(FREE_FAILURES):
        with pytest.raises(AuthenticationError):
            guard.check(WRONG, "203.0.113.7")
    waits = []
    for _ in range(4):
        with pytest.raises(AuthenticationError):  # this failure counts: the wait starts
            guard.check(WRONG, "203.0.113.7")
        with pytest.raises(RateLimitError) as refused:  # during the wait: not even checked
            guard.check(f"Bearer {ADMIN_KEY}", "203.0.113.7")
        waits.append(int(refused.value.headers["Retry-After"]))
        clock.now += waits[-1]
    assert waits == [1, 2, 4, 8]
    guard.check(f"Bearer {ADMIN_KEY}", "203.0.113.7")  # past the wait: the right key works
    for _ in range(FREE_FAILURES):  # and the count starts again
        with pytest.raises(AuthenticationError):
            guard.check(WRONG, "203.0.113.7")


def test_the_real_admin_from_another_address_is_not_locked_out():
    guard, _ = guard_with_clock()
    for _ in range(FREE_FAILURES + 3):
        with pytest.raises((AuthenticationError, RateLimitError)):
            guard.check(WRONG, "203.0.113.7")
    with pytest.raises(RateLimitError):
        guard.check(WRONG, "203.0.113.7")
    guard.check(f"Bearer {ADMIN_KEY}", "198.51.100.2")


def test_failures_are_forgotten_after_the_window_and_memory_is_bounded():
    clock = Clock()
    guessing = KeyGuessing(clock)
    for _ in range(FREE_FAILURES + 1):
        guessing.failed("a")
    assert guessing.wait("a") > 0
    clock.now += WINDOW_SECONDS + 1
    assert guessing.wait("a") == 0
    for i in range(MAX_CLIENTS + 50):
        guessing.failed(f"c{i}")
    assert guessing.tracked_clients == MAX_CLIENTS


def test_clients_are_counted_by_address_and_ipv6_by_64():
    assert client_group("2001:db8:1:2::5") == client_group("2001:db8:1:2:ffff::1")
    assert client_group("2001:db8:1:3::5") != client_group("2001:db8:1:2::5")
    assert client_group("::ffff:203.0.113.7") == "203.0.113.7"
    assert client_group(None) == "unknown"


async def test_wrong_admin_keys_over_http_are_counted_logged_and_slowed(
    fake_gateway: FakeGateway, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.WARNING, "gateway.tenancy.admin_guard")
    statuses = []
    for _ in range(FREE_FAILURES + 5):
        r = await fake_gateway.client.get("/admin/adapters", headers={"Authorization": WRONG})
        statuses.append(r.status_code)
    assert statuses == [401] * (FREE_FAILURES + 1) + [429] * 4
    refused = r.json()["error"]
    assert refused["type"] == "rate_limit_error" and refused["code"] == "admin_key_attempts"
    assert int(r.headers["Retry-After"]) >= 1
    metrics = fake_gateway.app.state.gateway.metrics
    count = metrics.registry.get_sample_value("loragate_rejections_total", {"reason": "admin_key"})
    assert count == FREE_FAILURES + 5
    logged = [rec.getMessage() for rec in caplog.records]
    assert len(logged) == FREE_FAILURES + 1 and "127.0.0.1" in logged[0]
    assert not any("wrong-key" in line for line in logged)
    # The admin, from another address, still gets in.
    transport = httpx.ASGITransport(app=fake_gateway.app, client=("198.51.100.2", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as other:
        ok = await other.get("/admin/adapters", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert ok.status_code == 200, ok.text
