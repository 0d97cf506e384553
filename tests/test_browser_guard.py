"""What a web page must not make a browser do: a body a page can send without a CORS
preflight is refused on JSON routes (every mode), and a keyless gateway answers only
requests addressed to a loopback name and from no other origin (DNS rebinding).

In-process (ASGI) with the fake engine; the requests carry the headers a browser would.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gateway.api.browser_guard import host_name, is_loopback_name
from gateway.app import create_app
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import generate_key
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.engine_fixtures import free_port, start_gateway, stop_gateway
from tests.support.fakes import FakeEngine

CHAT = {"model": "tiny-base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
CHAT_BYTES = httpx.Request("POST", "http://x", json=CHAT).content
KEY = generate_key()


@pytest.fixture
async def open_gateway(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[FakeGateway]:
    settings = fake_settings(
        fake_kit,
        tmp_path / "registry",
        admin={},  # no tenants, no admin keys: open mode
        server={"open_mode_hosts": ["gateway.internal"]},
    )
    async with run_fake_gateway(settings, renderer) as gateway:
        yield gateway


@pytest.fixture
async def keyed_gateway(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[FakeGateway]:
    tenants = {"t": {"keys": [{"id": KEY.key_id, "hash": KEY.hash}], "models": ["tiny-base"]}}
    settings = fake_settings(fake_kit, tmp_path / "keyed", tenants=tenants)
    async with run_fake_gateway(settings, renderer) as gw:
        yield gw


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code


async def test_a_cross_site_simple_post_with_a_rebound_host_is_refused(open_gateway):
    """The issue's request: text/plain (no preflight), foreign Host and Origin."""
    response = await open_gateway.client.post(
        "/v1/chat/completions",
        content=CHAT_BYTES,
        headers={
            "Content-Type": "text/plain",
            "Host": "rebound.example:8000",
            "Origin": "http://rebound.example:8000",
        },
    )
    assert response.status_code in (403, 415)
    assert open_gateway.engine.requests == []


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None]
)
@pytest.mark.parametrize("mode", ["open", "keyed"])
async def test_json_routes_take_json_only_in_every_mode(
    open_gateway, keyed_gateway, mode: str, content_type: str | None
):
    gw = open_gateway if mode == "open" else keyed_gateway
    headers = {"Host": "localhost:8000", "Authorization": f"Bearer {KEY.key}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    response = await gw.client.post("/v1/chat/completions", content=CHAT_BYTES, headers=headers)
    assert_error(response, 415, "unsupported_media_type")
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert gw.engine.requests == []
    ok = await gw.client.post(
        "/v1/chat/completions",
        content=CHAT_BYTES,
        headers={**headers, "Content-Type": "application/json; charset=utf-8"},
    )
    assert ok.status_code == 200, ok.text


@pytest.mark.parametrize(
    "host",
    [
        "localhost:8000",
        "127.0.0.1:8000",
        "127.0.0.1",
        "[::1]:8000",
        "LOCALHOST",
        "gateway.internal:80",
    ],
)
async def test_open_mode_answers_loopback_and_configured_hosts(open_gateway, host: str):
    response = await open_gateway.client.get("/v1/models", headers={"Host": host})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "host", ["rebound.example:8000", "10.0.0.5:8000", "localhost.rebound.example", "[::2]:8000"]
)
async def test_open_mode_refuses_a_foreign_host(open_gateway, host: str):
    response = await open_gateway.client.get("/v1/models", headers={"Host": host})
    assert_error(response, 403, "host_not_allowed")
    # The in-process client's own server name ("gateway") is the bound address: accepted.
    assert (await open_gateway.client.get("/v1/models")).status_code == 200


@pytest.mark.parametrize(
    "origin", ["http://rebound.example", "http://localhost:3000", "null", "https://localhost:8001"]
)
async def test_open_mode_refuses_another_origin_and_takes_its_own(open_gateway, origin: str):
    own = {"Host": "localhost:8000", "Origin": "http://localhost:8000"}
    assert (
        await open_gateway.client.post("/v1/chat/completions", json=CHAT, headers=own)
    ).status_code == 200
    response = await open_gateway.client.post(
        "/v1/chat/completions", json=CHAT, headers={**own, "Origin": origin}
    )
    assert_error(response, 403, "cross_origin")
    assert len(open_gateway.engine.requests) == 1


async def test_a_gateway_with_keys_leaves_host_and_origin_to_its_keys(keyed_gateway):
    headers = {"Host": "gateway.example.com", "Origin": "https://app.example.com"}
    assert (await keyed_gateway.client.get("/v1/models", headers=headers)).status_code == 401
    authorized = {**headers, "Authorization": f"Bearer {KEY.key}"}
    assert (await keyed_gateway.client.get("/v1/models", headers=authorized)).status_code == 200


async def test_upload_routes_also_take_multipart(keyed_gateway):
    response = await keyed_gateway.client.post(
        "/admin/adapters",
        files={"file": ("a.tar", b"not an archive")},
        data={"name": "x"},
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert response.status_code not in (415, 500), response.text
    text = await keyed_gateway.client.post(
        "/admin/adapters",
        content=b"name=x",
        headers={"Authorization": f"Bearer {ADMIN_KEY}", "Content-Type": "text/plain"},
    )
    assert_error(text, 415, "unsupported_media_type")


def test_host_names_and_loopback():
    assert host_name("LocalHost:8000") == "localhost"
    assert host_name("[::1]:8000") == "[::1]" and host_name("::1") == "::1"
    assert all(map(is_loopback_name, ["localhost", "127.0.0.1", "127.8.9.1", "[::1]", "::1"]))
    assert not any(map(is_loopback_name, ["localhost.evil", "0.0.0.0", "[::2]", "10.0.0.1"]))


def test_under_uvicorn_a_rebound_host_is_refused_and_loopback_served(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    """The ASGI ``server`` is the bound address here (127.0.0.1): a page whose name was
    rebound to it still names its own host, and is refused."""
    settings = fake_settings(
        fake_kit,
        tmp_path / "registry",
        admin={},
        server={"host": "127.0.0.1", "port": free_port()},
    )
    app = create_app(settings, engine_factory=lambda _: FakeEngine(), renderer=renderer)
    live = start_gateway(settings, app=app, ready_timeout=60)
    try:
        port = settings.server.port
        rebound = httpx.get(
            live.base_url + "/v1/models", headers={"Host": f"rebound.example:{port}"}
        )
        assert_error(rebound, 403, "host_not_allowed")
        page = httpx.post(
            live.base_url + "/v1/chat/completions",
            content=CHAT_BYTES,
            headers={"Content-Type": "text/plain", "Origin": "http://rebound.example"},
        )
        assert page.status_code in (403, 415)
        assert httpx.get(live.base_url + "/v1/models").status_code == 200
        own = {"Origin": f"http://127.0.0.1:{port}"}
        assert (
            httpx.post(live.base_url + "/v1/chat/completions", json=CHAT, headers=own).status_code
            == 200
        )
    finally:
        stop_gateway(live)
