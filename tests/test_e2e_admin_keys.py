"""End-to-end over loopback HTTP (uvicorn, fake engine): a key made with
``loragate keys create`` serves the official OpenAI SDK, and after
``loragate keys revoke`` the SDK gets ``AuthenticationError`` (401)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from gateway.app import create_app
from gateway.cli.main import main
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings
from tests.conftest import FakeKit
from tests.support.engine_fixtures import LiveGateway, free_port, start_gateway, stop_gateway
from tests.support.fakes import FakeEngine
from tests.support.tenant_admin_support import ADMIN, ADMIN_KEY, tenant_config


@pytest.fixture(scope="module")
def served(
    fake_kit: FakeKit, renderer: PromptRenderer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveGateway]:
    folder: Path = tmp_path_factory.mktemp("e2e-admin-keys")
    server = {"host": "127.0.0.1", "port": free_port()}
    settings = Settings.load(None, **tenant_config(fake_kit, folder / "data", server=server))
    engine = FakeEngine()
    app = create_app(settings, engine_factory=lambda _: engine, renderer=renderer)
    gateway = start_gateway(settings, app=app, ready_timeout=60)
    yield gateway
    stop_gateway(gateway)


def cli(served: LiveGateway, capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    code = main([*argv, "--url", served.base_url, "--admin-key", ADMIN_KEY.key])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def sdk(served: LiveGateway, key: str) -> OpenAI:
    return OpenAI(base_url=served.base_url + "/v1", api_key=key, max_retries=0)


def test_create_call_revoke_with_the_openai_sdk(
    served: LiveGateway, capsys: pytest.CaptureFixture[str]
) -> None:
    out = cli(served, capsys, "keys", "create", "--tenant", "acme", "--name", "sdk")
    key = next(word for word in out.split() if word.startswith("lg-"))
    client = sdk(served, key)
    reply = client.chat.completions.create(
        model="pirate", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert reply.model == "pirate" and reply.choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="pirate", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True
        )
    )
    assert chunks and chunks[0].model == "pirate"

    key_id = key.split("-")[1]
    listed = cli(served, capsys, "keys", "list", "--tenant", "acme")
    assert key_id in listed and key.removeprefix(f"lg-{key_id}-") not in listed
    cli(served, capsys, "keys", "revoke", "--tenant", "acme", key_id)
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(
            model="pirate", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
    assert refused.value.status_code == 401
    assert refused.value.code == "invalid_api_key"


async def test_a_key_limited_to_models_with_the_async_sdk(served: LiveGateway) -> None:
    async with httpx.AsyncClient(base_url=served.base_url) as admin:
        r = await admin.post(
            "/admin/tenants/acme/keys", json={"name": "only-pirate", "models": ["pirate"]},
            headers=ADMIN,
        )  # fmt: skip
        assert r.status_code == 201, r.text
    client = AsyncOpenAI(base_url=served.base_url + "/v1", api_key=r.json()["key"], max_retries=0)
    async with client:
        assert [m.id async for m in client.models.list()] == ["pirate"]
        with pytest.raises(openai.NotFoundError):
            await client.chat.completions.create(
                model="tiny-base", messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        reply = await client.chat.completions.create(
            model="pirate", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 2
