"""End-to-end: a 50/50 traffic split between two versions of one adapter on the real
vLLM engine, called through the official OpenAI SDK (the session's ``live_gateway``).

The two versions have different random weights, so at temperature 0 their answers
differ; each ``user`` must get the answer of the version its bucket names, every time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from adapters.traffic_split import bucket, choose
from tests.support.engine_fixtures import LIVE_ADMIN_KEY, LiveGateway, live_adapter_root
from tests.support.modelkit import write_random_adapter

pytestmark = pytest.mark.engine

ADMIN = {"Authorization": f"Bearer {LIVE_ADMIN_KEY}"}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name a colour."}]
USERS = [f"caller-{i}" for i in range(12)]


@pytest.fixture
def split_adapter(
    live_gateway: LiveGateway, tiny_kit: tuple[Path, dict[str, Path]]
) -> Iterator[str]:
    """A fresh adapter name with versions v1 and v2 (different weights), split 50/50;
    retired afterwards so the session's other tests see the registry as before."""
    name = f"split-{uuid.uuid4().hex[:8]}"
    root = live_adapter_root(tiny_kit)
    with httpx.Client(base_url=live_gateway.base_url, headers=ADMIN, timeout=120) as admin:
        for version, seed in (("v1", 301), ("v2", 302)):
            folder = write_random_adapter(tiny_kit[0], root / f"{name}-{version}", seed=seed)
            body = {"name": name, "path": str(folder), "version": version}
            r = admin.post("/admin/adapters", json=body)
            assert r.status_code == 201, r.text
        r = admin.put(f"/admin/adapters/{name}/split", json={"weights": {"v1": 50, "v2": 50}})
        assert r.status_code == 200 and r.json()["split"] == {"v1": 50, "v2": 50}, r.text
        yield name
        admin.delete(f"/admin/adapters/{name}")


def answer(client: OpenAI, model: str, user: str) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,
        user=user,
    )
    assert reply.model == model
    content = reply.choices[0].message.content
    assert content is not None
    return content


def test_users_reach_both_versions_and_each_sticks_to_its_own(
    live_gateway: LiveGateway, split_adapter: str
) -> None:
    client = OpenAI(base_url=live_gateway.base_url + "/v1", api_key="unused", max_retries=0)
    # name@version ignores the split: the reference answer of each version.
    by_version = {v: answer(client, f"{split_adapter}@{v}", USERS[0]) for v in ("v1", "v2")}
    assert by_version["v1"] != by_version["v2"]  # the versions are told apart by output

    ordered = [("v1", 50), ("v2", 50)]
    expected = {u: choose(ordered, bucket(split_adapter, u)) for u in USERS}
    assert set(expected.values()) == {"v1", "v2"}  # these users cover both sides
    for user in USERS:
        assert answer(client, split_adapter, user) == by_version[expected[user]], user
    for user in USERS[:4]:  # the same user again: the same version
        assert answer(client, split_adapter, user) == by_version[expected[user]], user

    # The split's versions have their own series in /metrics.
    metrics = httpx.get(live_gateway.base_url + "/metrics", headers=ADMIN).text
    for version in ("v1", "v2"):
        assert f'adapter="{split_adapter}@{version}"' in metrics
