"""End to end, in-process engine: the OpenAI SDK asks the session's real gateway (uvicorn
on loopback, in-process vLLM) for an adapter that only a tenant's S3 bucket prefix holds
(moto on loopback). The tenant and its key come from the config file; the first request
fetches the adapter, registers it and serves it, with the same tokens as the same weights
registered by an operator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from gateway.adapter_runtime.on_demand import scoped_name
from gateway.settings.keys import generate_key
from gateway.settings.tenancy import TenancyConfig
from tests.support.engine_fixtures import LIVE_ADMIN_KEY, LiveGateway, live_adapter_root
from tests.support.modelkit import tiny_llama_dir, write_random_adapter
from tests.support.s3_server import ACCESS_KEY_ENV, BUCKET, SECRET_KEY_ENV, S3Server

pytestmark = pytest.mark.engine

ADMIN = {"Authorization": f"Bearer {LIVE_ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "Say something."}]


@dataclass
class SourcedTenant:
    live: LiveGateway
    tenant: str
    key: str
    prefix: str
    folder: Path
    registered: str

    def client(self) -> OpenAI:
        return OpenAI(base_url=self.live.base_url + "/v1", api_key=self.key, max_retries=0)


@pytest.fixture(scope="module")
def sourced(
    live_gateway: LiveGateway,
    tiny_kit: tuple[Path, dict[str, Path]],
    s3_server: S3Server,
) -> Iterator[SourcedTenant]:
    """A tenant whose adapter source is a fresh bucket prefix holding ``persona``, laid
    on the session's gateway as a config-file tenant for this module (the session's open
    mode comes back after: a tenant made over the admin API would keep keys required for
    every later test); the same files sit under the registry's allowed root for an
    operator to register as ``<registered>``. Adapters go at the end."""
    tag = uuid.uuid4().hex[:8]
    tenant, prefix, registered = f"src-{tag}", f"{tag}/inproc/", f"persona-reg-{tag}"
    folder = write_random_adapter(
        tiny_llama_dir(), live_adapter_root(tiny_kit) / f"persona-{tag}", seed=42
    )
    s3_server.put_folder(folder, f"{prefix}persona/")
    gatekeeper = live_gateway.state.gatekeeper
    before = gatekeeper.directory.file_config
    key = generate_key()
    gatekeeper.reload(
        TenancyConfig.model_validate(
            {
                "tenants": {
                    tenant: {
                        "keys": [{"id": key.key_id, "hash": key.hash}],
                        "models": ["tiny-llama", registered],
                        "adapter_source": {
                            "kind": "s3",
                            "endpoint": s3_server.endpoint,
                            "bucket": BUCKET,
                            "prefix": prefix,
                            "access_key_env": ACCESS_KEY_ENV,
                            "secret_key_env": SECRET_KEY_ENV,
                        },
                    }
                }
            }
        )
    )
    admin = httpx.Client(base_url=live_gateway.base_url, headers=ADMIN, timeout=120)
    try:
        yield SourcedTenant(live_gateway, tenant, key.key, prefix, folder, registered)
    finally:
        gatekeeper.reload(before)
        for name in (registered, scoped_name(tenant, "persona")):
            admin.delete(f"/admin/adapters/{name}")
        admin.close()


def answer(client: OpenAI, model: str) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=8,
        temperature=0,
    )
    assert reply.model == model
    return reply.choices[0].message.content or ""


def test_a_first_request_serves_the_buckets_adapter_as_its_registered_copy_would(
    sourced: SourcedTenant, s3_server: S3Server
) -> None:
    client = sourced.client()
    assert not s3_server.reads(f"{sourced.prefix}persona/")  # nothing fetched before
    fetched = answer(client, "persona")
    assert len(s3_server.reads(f"{sourced.prefix}persona/")) == 3  # one list, two files
    registered = httpx.post(
        sourced.live.base_url + "/admin/adapters",
        json={"name": sourced.registered, "path": str(sourced.folder)},
        headers=ADMIN,
        timeout=120,
    )
    assert registered.status_code == 201, registered.text
    assert fetched == answer(client, sourced.registered)
    assert fetched != answer(client, "tiny-llama")
    assert answer(client, "persona") == fetched  # served from the registry copy now
    assert len(s3_server.reads(f"{sourced.prefix}persona/")) == 3
    entry = sourced.live.state.registry.resolve(scoped_name(sourced.tenant, "persona"))
    assert entry.path.is_relative_to(sourced.live.settings.registry.data_dir.resolve())
