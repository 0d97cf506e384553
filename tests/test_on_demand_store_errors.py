"""A tenant's S3 source that lists an adapter but will not hand over its files (an
archived object, a store failing mid-fetch): the tenant gets the source-unavailable 503
with ``Retry-After``, as when the listing fails, never a remembered 400 and never the
operator's endpoint. moto on loopback, the whole gateway over ASGI, fake engine."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import generate_key
from tests.conftest import FakeKit, fake_settings, run_fake_gateway
from tests.support.modelkit import write_random_adapter
from tests.support.s3_server import ACCESS_KEY_ENV, BUCKET, SECRET_KEY_ENV, S3Server

KEY = generate_key()
HEADERS = {"Authorization": f"Bearer {KEY.key}"}


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (ACCESS_KEY_ENV, SECRET_KEY_ENV):
        if name not in os.environ:
            monkeypatch.setenv(name, "test")


async def test_files_the_store_will_not_hand_over_are_a_503_asked_again_later(
    fake_kit: FakeKit,
    tmp_path: Path,
    renderer: PromptRenderer,
    s3_server: S3Server,
    s3_credentials: None,
) -> None:
    prefix = f"{uuid.uuid4().hex[:8]}/acme/"
    folder = write_random_adapter(fake_kit.base, tmp_path / "cold", seed=5)
    client = s3_server.client()
    for path in sorted(folder.iterdir()):  # listed, but GetObject: InvalidObjectState
        client.put_object(
            Bucket=BUCKET,
            Key=f"{prefix}cold/{path.name}",
            Body=path.read_bytes(),
            StorageClass="GLACIER",
        )
    source = {
        "kind": "s3",
        "endpoint": s3_server.endpoint,
        "bucket": BUCKET,
        "prefix": prefix,
        "access_key_env": ACCESS_KEY_ENV,
        "secret_key_env": SECRET_KEY_ENV,
    }
    tenants = {
        "acme": {
            "keys": [{"id": KEY.key_id, "hash": KEY.hash}],
            "models": ["tiny-base"],
            "adapter_source": source,
        }
    }
    settings = fake_settings(fake_kit, tmp_path / "registry", tenants=tenants)
    body = {"model": "cold", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with run_fake_gateway(settings, renderer) as gateway:
        for attempt in range(2):
            before = len(s3_server.reads(f"{prefix}cold/"))
            r = await gateway.client.post("/v1/chat/completions", json=body, headers=HEADERS)
            assert r.status_code == 503, (attempt, r.text)
            error = r.json()["error"]
            assert error["code"] == "adapter_source_unavailable", error
            assert set(error) == {"message", "type", "param", "code"}
            assert r.headers.get("retry-after"), r.headers
            endpoint = s3_server.endpoint.split("://")[1]
            assert endpoint not in r.text and "127.0.0.1" not in r.text, r.text
            assert len(s3_server.reads(f"{prefix}cold/")) > before  # not remembered
        assert gateway.engine.requests == []
