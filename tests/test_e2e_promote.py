"""End-to-end: ``loragate adapters promote`` on the real vLLM engine (the session's
``live_gateway``), its eval requests sent with the official OpenAI SDK.

Two versions of one adapter with different random weights answer differently at
temperature 0. The eval set expects, for six questions, the answer version v2 gives:
v2 is better than v1 on it, so v2 passes the gate over v1 (the split naming it ends,
the change is audited) and v1 then fails the gate over v2 (nothing changes).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

from gateway.cli.main import main
from gateway.compare.scoring import contains
from tests.support.engine_fixtures import LIVE_ADMIN_KEY, LiveGateway, live_adapter_root
from tests.support.modelkit import write_random_adapter

pytestmark = pytest.mark.engine

ADMIN = {"Authorization": f"Bearer {LIVE_ADMIN_KEY}"}
MAX_TOKENS = 8
ITEMS = 6
QUESTIONS = [
    "Name a colour.",
    "Name an animal.",
    "Say hello.",
    "Count to three.",
    "Name a city.",
    "What is two plus two?",
    "Name a fruit.",
    "Name a planet.",
    "Say goodbye.",
    "Name a tree.",
]


@pytest.fixture
def two_versions(
    live_gateway: LiveGateway, tiny_kit: tuple[Path, dict[str, Path]]
) -> Iterator[tuple[str, httpx.Client]]:
    """A fresh adapter with v1 (active) and v2 (inactive), split 50/50; retired after."""
    name = f"promote-{uuid.uuid4().hex[:8]}"
    root = live_adapter_root(tiny_kit)
    with httpx.Client(base_url=live_gateway.base_url, headers=ADMIN, timeout=120) as admin:
        for version, seed in (("v1", 411), ("v2", 412)):
            folder = write_random_adapter(tiny_kit[0], root / f"{name}-{version}", seed=seed)
            body = {"name": name, "path": str(folder), "version": version}
            r = admin.post("/admin/adapters", json=body)
            assert r.status_code == 201, r.text
        r = admin.put(f"/admin/adapters/{name}/split", json={"weights": {"v1": 50, "v2": 50}})
        assert r.status_code == 200, r.text
        yield name, admin
        admin.delete(f"/admin/adapters/{name}")


def answer(client: OpenAI, model: str, question: str) -> str:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    return reply.choices[0].message.content or ""


def eval_set_favouring_v2(live_gateway: LiveGateway, name: str, path: Path) -> Path:
    """Six items whose fact is v2's answer, on questions where v1's answer lacks it."""
    client = OpenAI(base_url=live_gateway.base_url + "/v1", api_key="unused", max_retries=0)
    lines = []
    for i, question in enumerate(QUESTIONS):
        v1, v2 = (answer(client, f"{name}@{v}", question) for v in ("v1", "v2"))
        if v2.strip() and not contains(v1, v2):
            fact = {"id": f"q{i}", "lang": "en", "question": question, "facts": [v2.strip()]}
            lines.append(json.dumps(fact))
        if len(lines) == ITEMS:
            break
    assert len(lines) == ITEMS, "the two versions answer too many questions alike"
    path.write_text("\n".join(lines) + "\n")
    return path


def promote(live_gateway: LiveGateway, target: str, eval_set: Path, *extra: str) -> int:
    return main(
        [
            "adapters",
            "promote",
            target,
            "--eval-set",
            str(eval_set),
            "--url",
            live_gateway.base_url,
            "--admin-key",
            LIVE_ADMIN_KEY,
            "--api-key",
            "unused",
            "--max-tokens",
            str(MAX_TOKENS),
            "--concurrency",
            "1",  # alone in the batch: the answers the eval set was written from
            "--no-progress",
            *extra,
        ]
    )


def test_promote_passes_a_better_version_and_refuses_a_worse_one(
    live_gateway: LiveGateway,
    two_versions: tuple[str, httpx.Client],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, admin = two_versions
    eval_set = eval_set_favouring_v2(live_gateway, name, tmp_path / "eval.jsonl")

    assert promote(live_gateway, f"{name}@v2", eval_set, "--dry-run") == 0
    printed = capsys.readouterr().out
    assert "mean score 1.000" in printed and "mean score 0.000" in printed
    assert "dry run" in printed and re.search(rf"^items\s+{ITEMS}$", printed, re.MULTILINE)
    shown = admin.get(f"/admin/adapters/{name}").json()
    assert shown["active_version"] == "v1" and shown["split"] == {"v1": 50, "v2": 50}

    assert promote(live_gateway, f"{name}@v2", eval_set) == 0
    assert f"promoted: {name}@v2 is active (was v1)" in capsys.readouterr().out
    shown = admin.get(f"/admin/adapters/{name}").json()
    assert shown["active_version"] == "v2" and shown["split"] is None
    entry = next(e for e in admin.get("/admin/audit").json()["data"] if e["target"] == name)
    assert entry["action"] == "adapter.promote" and entry["actor"] == "api_key"
    detail = entry["detail"]
    assert (detail["version"], detail["previous"]) == ("v2", "v1")
    assert detail["split_ended"] == {"v1": 50, "v2": 50}
    assert detail["gate"]["items"] == ITEMS and detail["gate"]["low"] > 0

    # Now v2 is stable and v1 the candidate: worse on every item, refused.
    assert promote(live_gateway, f"{name}@v1", eval_set) == 1
    assert "keep the stable version" in capsys.readouterr().out
    assert admin.get(f"/admin/adapters/{name}").json()["active_version"] == "v2"


def test_unknown_adapter_or_version_exits_2(
    live_gateway: LiveGateway,
    two_versions: tuple[str, httpx.Client],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, _ = two_versions
    eval_set = tmp_path / "eval.jsonl"
    eval_set.write_text(json.dumps({"id": "a", "lang": "en", "question": "Hi", "facts": ["x"]}))
    assert promote(live_gateway, "no-such-adapter@v1", eval_set) == 2
    assert "no adapter named 'no-such-adapter'" in capsys.readouterr().err
    assert promote(live_gateway, f"{name}@v9", eval_set) == 2
    assert "has no version 'v9'" in capsys.readouterr().err
    assert promote(live_gateway, f"{name}@v1", eval_set) == 2  # already active
    assert "already the active version" in capsys.readouterr().err
