"""``/console`` as served: the page and its files with a strict Content-Security-Policy
and no inline script or third-party asset, and scripts that never turn a string into
markup or code. The page at work in a browser: ``tests/test_console_browser.py``."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.console.routes import ASSETS, PAGE, SECURITY_HEADERS, STATIC_DIR
from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway


@pytest.fixture
async def gateway(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[FakeGateway]:
    async with run_fake_gateway(fake_settings(fake_kit, tmp_path / "registry"), renderer) as gw:
        yield gw


@pytest.mark.asyncio
async def test_console_page_and_assets_carry_a_strict_policy(gateway: FakeGateway) -> None:
    page = await gateway.client.get("/console")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert policy == SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    html = page.text
    assert '<script type="module" src="/console/console.js"></script>' in html
    assert "<script>" not in html and "<style" not in html and " style=" not in html
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handler
    assert "http://" not in html and "https://" not in html  # no third-party asset
    for asset, media_type in ASSETS.items():
        answer = await gateway.client.get(f"/console/{asset}")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == media_type
        assert answer.headers["content-security-policy"] == policy
    assert (await gateway.client.get("/console/")).status_code == 308
    missing = await gateway.client.get("/console/../app.py")
    assert missing.status_code == 404
    assert (await gateway.client.get("/console/secrets.txt")).json()["error"]["type"]


def test_console_scripts_build_elements_from_text_only() -> None:
    """Every static file is served, and no script turns a string into markup or code:
    names chosen by admin-key holders reach the page as text nodes only."""
    assert sorted(p.name for p in STATIC_DIR.iterdir() if p.name != PAGE) == sorted(ASSETS)
    for script in STATIC_DIR.glob("*.js"):
        source = script.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in source, f"{script.name} uses {sink}"
        assert "localStorage" not in source, f"{script.name}: the admin key stays in this tab"
