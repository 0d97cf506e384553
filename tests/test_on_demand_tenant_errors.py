"""What a tenant learns from the refusals of its own folder source: the adapter's name as
it asked for it, never the gateway's file paths (the namespace root, a link's target).
Through the whole gateway over ASGI with the fake engine."""

from __future__ import annotations

import io
import tarfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import generate_key
from tests.conftest import FakeGateway, FakeKit, fake_settings, run_fake_gateway
from tests.support.modelkit import write_random_adapter

KEY = generate_key()
HEADERS = {"Authorization": f"Bearer {KEY.key}"}
MESSAGES = [{"role": "user", "content": "hello"}]


def packed(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    return buffer.getvalue()


@asynccontextmanager
async def folder_tenant(
    kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, source: dict[str, str]
) -> AsyncIterator[FakeGateway]:
    tenants = {
        "acme": {
            "keys": [{"id": KEY.key_id, "hash": KEY.hash}],
            "models": ["tiny-base"],
            "adapter_source": source,
        }
    }
    settings = fake_settings(
        kit,
        tmp_path / "registry",
        tenants=tenants,
        registry={
            "data_dir": tmp_path / "registry",
            "allowed_roots": [tmp_path / "mounted"],
            "allowed_protocols": ["file"],
        },
    )
    async with run_fake_gateway(settings, renderer) as gateway:
        yield gateway


async def chat(gateway: FakeGateway, model: str) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 2}
    return await gateway.client.post("/v1/chat/completions", json=body, headers=HEADERS)


def assert_no_paths(response: httpx.Response, tmp_path: Path) -> None:
    text = response.text
    assert str(tmp_path) not in text, text
    assert str(tmp_path.resolve()) not in text, text
    assert "mounted" not in text and "elsewhere" not in text, text


@pytest.fixture
def layout(fake_kit: FakeKit, tmp_path: Path) -> Path:
    """``mounted/acme`` (the tenant's root) holding a folder, an archive and a file that
    link to ``elsewhere``, outside every allowed root, and a folder that links to another
    tenant's root, inside the allowed root ``mounted``."""
    root = tmp_path / "mounted" / "acme"
    root.mkdir(parents=True)
    outside = write_random_adapter(fake_kit.base, tmp_path / "elsewhere" / "tone", seed=7)
    (tmp_path / "elsewhere" / "out.tar.gz").write_bytes(packed(outside))
    (root / "linked").symlink_to(outside, target_is_directory=True)
    (root / "packed.tar.gz").symlink_to(tmp_path / "elsewhere" / "out.tar.gz")
    zetas = write_random_adapter(fake_kit.base, tmp_path / "mounted" / "zeta" / "secret", seed=9)
    (root / "borrowed").symlink_to(zetas, target_is_directory=True)
    inner = write_random_adapter(fake_kit.base, root / "inner", seed=8)
    (inner / "adapter_model.safetensors").unlink()
    (inner / "adapter_model.safetensors").symlink_to(outside / "adapter_model.safetensors")
    return root


@pytest.mark.parametrize("kind", ["folder", "uri"])
async def test_refusals_of_a_folder_source_name_the_adapter_not_the_gateways_paths(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, layout: Path, kind: str
) -> None:
    source = {"kind": "folder", "path": str(layout)}
    if kind == "uri":
        source = {"kind": "uri", "uri": f"file://{layout}"}
    async with folder_tenant(fake_kit, tmp_path, renderer, source) as gateway:
        for model in ("linked", "packed", "inner", "borrowed"):
            for attempt in ("fetched", "remembered"):
                response = await chat(gateway, model)
                assert response.status_code == 400, (model, attempt, response.text)
                error = response.json()["error"]
                assert error["code"] == "source_not_allowed", error
                assert error["type"] == "invalid_request_error"
                assert model in error["message"], error
                assert_no_paths(response, tmp_path)
        assert gateway.engine.requests == []
