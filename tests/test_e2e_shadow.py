"""End-to-end: shadow mode on the real vLLM engine, called through the official OpenAI
SDK (the session's ``live_gateway``, open mode: no tenant, so nothing is logged).

The adapter's versions have different random weights, so at temperature 0 their
answers differ. With v1 serving everyone and v2 shadowing 100 %, every caller gets v1's
answer; the engine also runs each request on v2 (counted in ``loragate_shadow_*``); the
shadow log stays empty, since no tenant opted in.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families

from tests.support.engine_fixtures import LIVE_ADMIN_KEY, LiveGateway, live_adapter_root
from tests.support.modelkit import write_random_adapter

pytestmark = pytest.mark.engine

ADMIN = {"Authorization": f"Bearer {LIVE_ADMIN_KEY}"}
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture
def shadowed(live_gateway: LiveGateway, tiny_kit: tuple[Path, dict[str, Path]]) -> Iterator[str]:
    """A fresh adapter: v1 serves every caller, v2 shadows all of them; retired after."""
    name = f"shadow-{uuid.uuid4().hex[:8]}"
    root = live_adapter_root(tiny_kit)
    with httpx.Client(base_url=live_gateway.base_url, headers=ADMIN, timeout=120) as admin:
        for version, seed in (("v1", 311), ("v2", 312)):
            folder = write_random_adapter(tiny_kit[0], root / f"{name}-{version}", seed=seed)
            body = {"name": name, "path": str(folder), "version": version}
            assert admin.post("/admin/adapters", json=body).status_code == 201
        split = {"weights": {"v1": 100}, "shadow": {"version": "v2", "percent": 100}}
        r = admin.put(f"/admin/adapters/{name}/split", json=split)
        assert r.status_code == 200 and r.json()["shadow"]["percent"] == 100, r.text
        yield name
        admin.delete(f"/admin/adapters/{name}")


def answer(client: OpenAI, model: str, user: str) -> str:
    reply = client.chat.completions.create(
        model=model, messages=MESSAGES, max_tokens=8, temperature=0, user=user
    )
    assert reply.model == model
    return reply.choices[0].message.content or ""


def shadow_counts(base_url: str, adapter: str) -> dict[str, float]:
    """``loragate_shadow_*`` samples of ``adapter`` from ``/metrics``."""
    text = httpx.get(base_url + "/metrics", headers=ADMIN).text
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if (
                sample.name.startswith("loragate_shadow")
                and sample.labels.get("adapter") == adapter
            ):
                key = sample.name + "/" + sample.labels.get("outcome", "")
                found[key] = found.get(key, 0.0) + sample.value
    return found


def test_callers_get_the_stable_answer_while_the_shadow_runs_on_the_engine(
    live_gateway: LiveGateway, shadowed: str
) -> None:
    client = OpenAI(base_url=live_gateway.base_url + "/v1", api_key="unused", max_retries=0)
    stable = answer(client, f"{shadowed}@v1", "ref")
    candidate = answer(client, f"{shadowed}@v2", "ref")
    assert stable != candidate  # the versions are told apart by output

    users = [f"caller-{i}" for i in range(3)]
    for user in users:
        assert answer(client, shadowed, user) == stable, user

    deadline = time.monotonic() + 60
    label = f"{shadowed}@v2"
    counts = shadow_counts(live_gateway.base_url, label)
    while counts.get("loragate_shadow_requests_total/ok", 0) < len(users):
        assert time.monotonic() < deadline, counts
        time.sleep(0.2)
        counts = shadow_counts(live_gateway.base_url, label)
    assert counts.get("loragate_shadow_requests_total/error", 0) == 0
    assert counts["loragate_shadow_completion_tokens_total/"] >= len(users)

    log = httpx.get(live_gateway.base_url + f"/admin/adapters/{shadowed}/shadow", headers=ADMIN)
    assert log.status_code == 200 and log.json()["data"] == []  # nobody opted in
