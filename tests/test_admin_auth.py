"""The admin credential: 401 without or with a wrong key, 403 for tenant keys, constant-time."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr, ValidationError

from gateway.errors import AuthenticationError, PermissionDeniedError
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from gateway.tenancy.admin_guard import AdminGuard
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.admin_requests import ADMIN, upload

ROUTES = [
    ("GET", "/admin/adapters"),
    ("GET", "/admin/adapters/pirate"),
    ("POST", "/admin/adapters"),
    ("DELETE", "/admin/adapters/pirate"),
    ("POST", "/admin/adapters/pirate/activate"),
    ("POST", "/admin/adapters/pirate/pin"),
    ("POST", "/admin/adapters/pirate/unpin"),
    ("POST", "/admin/adapters/pirate/prewarm"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_every_admin_route_needs_the_key(
    fake_gateway: FakeGateway, method: str, path: str
) -> None:
    client = fake_gateway.client
    missing = await client.request(method, path, json={"version": "v1"})
    wrong = await client.request(
        method, path, json={"version": "v1"}, headers={"Authorization": "Bearer nope"}
    )
    for r in (missing, wrong):
        assert r.status_code == 401, r.text
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        assert r.json()["error"]["type"] == "authentication_error"
        assert r.headers["www-authenticate"] == "Bearer"
    # Nothing happened: pirate is still served, unpinned, and loaded only at start-up.
    assert len(fake_gateway.engine.added) == 2 and fake_gateway.engine.pinned == []


async def test_the_admin_key_is_accepted(fake_gateway: FakeGateway) -> None:
    r = await fake_gateway.client.get("/admin/adapters", headers=ADMIN)
    assert r.status_code == 200
    lowercase = {"authorization": f"bearer {ADMIN_KEY}"}
    assert (await fake_gateway.client.get("/admin/adapters", headers=lowercase)).status_code == 200


async def test_an_unauthenticated_upload_is_refused_before_it_is_read(
    fake_gateway: FakeGateway,
) -> None:
    r = await fake_gateway.client.post(
        "/admin/adapters",
        data={"name": "sneaky"},
        files={"file": ("a.zip", b"PK" + b"\0" * 1000, "application/zip")},
    )
    assert r.status_code == 401
    listing = await fake_gateway.client.get("/admin/adapters", headers=ADMIN)
    assert "sneaky" not in {a["name"] for a in listing.json()["data"]}


async def test_an_upload_with_a_bad_key_gets_401_not_a_parse_error(
    fake_gateway: FakeGateway,
) -> None:
    r = await upload(fake_gateway.client, "x", "a.zip", b"junk")
    assert r.status_code != 401  # sanity: with the key it is parsed (and refused as junk)
    bad = await fake_gateway.client.post(
        "/admin/adapters",
        content=b"{not json",
        headers={"Authorization": "Bearer wrong", "Content-Type": "application/json"},
    )
    assert bad.status_code == 401


async def test_without_a_configured_key_the_admin_api_is_closed(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    settings = fake_settings(fake_kit, tmp_path / "registry", admin={})
    async with run_fake_gateway(settings, renderer) as gateway:
        r = await gateway.client.get("/admin/adapters", headers=ADMIN)
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "admin_api_disabled"
        # Inference is unaffected.
        ok = await gateway.client.post(
            "/v1/chat/completions",
            json={"model": "pirate", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert ok.status_code == 200


def test_guard_gives_tenant_keys_403_and_unknown_keys_401() -> None:
    guard = AdminGuard(SecretStr(ADMIN_KEY), is_tenant_key=lambda key: key == "tenant-key")
    guard.check(f"Bearer {ADMIN_KEY}")
    with pytest.raises(PermissionDeniedError):
        guard.check("Bearer tenant-key")
    with pytest.raises(AuthenticationError):
        guard.check("Bearer someone-else")
    with pytest.raises(AuthenticationError):
        guard.check(None)
    with pytest.raises(AuthenticationError):
        guard.check(ADMIN_KEY)  # not a bearer header


def test_short_admin_keys_are_refused_by_the_settings(fake_kit: FakeKit) -> None:
    with pytest.raises(ValidationError, match="at least 16"):
        Settings.load(None, model={"path": fake_kit.base}, admin={"api_key": "short"})


def test_the_admin_key_can_come_from_the_environment(
    fake_kit: FakeKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LORAGATE_ADMIN__API_KEY", ADMIN_KEY)
    settings = Settings.load(None, model={"path": fake_kit.base})
    assert settings.admin.api_key is not None
    assert settings.admin.api_key.get_secret_value() == ADMIN_KEY
    assert ADMIN_KEY not in repr(settings)  # a SecretStr: never printed


async def test_a_failing_key_lookup_is_a_500_not_a_wrong_key(
    fake_gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The admin guard's lookup turns only ``AuthenticationError`` into "no such key":
    a bug in the tenant directory is the server's error (500), not the caller's 401."""

    def broken(authorization: str | None) -> None:
        raise RuntimeError("directory bug")

    directory = fake_gateway.app.state.gateway.gatekeeper.directory
    monkeypatch.setattr(directory, "authenticate", broken)
    transport = httpx.ASGITransport(app=fake_gateway.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        r = await client.get("/admin/adapters", headers={"Authorization": "Bearer sk-not-it"})
    assert r.status_code == 500
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
