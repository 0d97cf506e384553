"""The API description (``/openapi.json``, ``/docs``, ``/redoc``) names the admin API:
off by default, behind the admin key with ``server.docs: admin``, and its pages load
nothing from outside the gateway."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit, fake_settings, run_fake_gateway

DOC_ROUTES = ["/openapi.json", "/docs", "/redoc"]
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


@asynccontextmanager
async def gateway_with_docs(
    kit: FakeKit, tmp: Path, renderer: PromptRenderer, docs: str | None
) -> AsyncIterator[FakeGateway]:
    server = {} if docs is None else {"server": {"docs": docs}}
    settings = fake_settings(kit, tmp / "registry", **server)
    async with run_fake_gateway(settings, renderer) as gateway:
        yield gateway


def assert_openai_error(body: dict[str, object]) -> None:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}  # type: ignore[arg-type]


async def test_docs_are_off_by_default(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    async with gateway_with_docs(fake_kit, tmp_path, renderer, None) as gw:
        for path in DOC_ROUTES:
            for headers in ({}, ADMIN):
                r = await gw.client.get(path, headers=headers)
                assert r.status_code == 404, (path, r.status_code)
                assert_openai_error(r.json())


async def test_admin_mode_needs_the_admin_key(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    async with gateway_with_docs(fake_kit, tmp_path, renderer, "admin") as gw:
        for path in [*DOC_ROUTES, "/docs/assets/swagger-ui-bundle.js"]:
            r = await gw.client.get(path)
            assert r.status_code == 401, (path, r.status_code)
            assert_openai_error(r.json())
            wrong = await gw.client.get(path, headers={"Authorization": "Bearer wrong-key"})
            assert wrong.status_code == 401, path
            ok = await gw.client.get(path, headers=ADMIN)
            assert ok.status_code == 200, path
        spec = (await gw.client.get("/openapi.json", headers=ADMIN)).json()
        assert "/v1/chat/completions" in spec["paths"]
        assert "/admin/adapters" in spec["paths"]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_open_pages_load_only_local_assets(
    page: str, fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    async with gateway_with_docs(fake_kit, tmp_path, renderer, "open") as gw:
        r = await gw.client.get(page)
        assert r.status_code == 200
        html = r.text
        assert "://" not in html, "the page must not load anything from another host"
        assert r.headers["x-content-type-options"] == "nosniff"
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
        urls += re.findall(r"""url: ?['"]([^'"]+)['"]""", html)  # Swagger UI's spec
        urls += re.findall(r"""spec-url=["']([^"']+)["']""", html)  # ReDoc's spec
        assert "/openapi.json" in urls
        scripts = [u for u in urls if u.endswith(".js")]
        assert scripts, html
        for url in urls:
            assert url.startswith("/"), url
            asset = await gw.client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 0


@pytest.mark.parametrize(
    "path", ["/docs/assets/index.html", "/docs/assets/..%2F..%2Fopenapi_docs.py", "/docs/assets/"]
)
async def test_only_the_listed_assets_are_served(
    path: str, fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    async with gateway_with_docs(fake_kit, tmp_path, renderer, "open") as gw:
        r = await gw.client.get(path)
        assert r.status_code == 404
        assert_openai_error(r.json())
