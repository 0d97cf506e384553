"""``loragate adapters promote`` against an in-process gateway with the fake engine
(admin calls and the OpenAI SDK's requests over one ASGI transport): the flow, the
exit statuses, ``--json``, ``--dry-run``, and no promotion on failed requests.

The fake engine's answer depends on the adapter's name only, so both versions of
``pirate`` answer alike: the candidate is "not worse" and passes at margin 0. Better
and worse candidates on the real engine: ``tests/test_e2e_promote.py``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from gateway.cli.main import build_parser
from gateway.cli.promote import run_promote
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit
from tests.support.admin_requests import ADMIN, new_adapter, register


def eval_set(tmp_path: Path, items: int = 4) -> Path:
    path = tmp_path / "eval.jsonl"
    lines = [
        {"id": f"q{i}", "lang": "en", "question": f"Question {i}?", "facts": ["pirate0w0"]}
        for i in range(items)
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


async def promote(gw: FakeGateway, *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(
        [
            "adapters",
            "promote",
            *argv,
            "--url",
            "http://gateway",
            "--admin-key",
            ADMIN_KEY,
            "--api-key",
            "unused",
            "--max-tokens",
            "4",
            "--no-progress",
        ]
    )
    out = io.StringIO()
    status = await run_promote(args, transport=httpx.ASGITransport(app=gw.app), out=out)
    return status, out.getvalue()


async def active(gw: FakeGateway) -> str:
    info = (await gw.client.get("/admin/adapters/pirate", headers=ADMIN)).json()
    return str(info["active_version"])


@pytest.fixture
async def with_v2(fake_gateway: FakeGateway, fake_kit: FakeKit) -> FakeGateway:
    r = await register(
        fake_gateway.client, "pirate", new_adapter(fake_kit, seed=41), activate=False
    )
    assert r.status_code == 201, r.text
    return fake_gateway


async def test_an_equal_candidate_is_promoted_and_each_version_answered_every_item(
    with_v2: FakeGateway, tmp_path: Path
) -> None:
    status, printed = await promote(with_v2, "pirate@v2", "--eval-set", str(eval_set(tmp_path)))
    assert status == 0, printed
    assert "promoted: pirate@v2 is active (was v1)" in printed
    assert await active(with_v2) == "v2"
    versions = sorted(str(r.adapter.version) for r in with_v2.engine.requests if r.adapter)
    assert versions == ["v1"] * 4 + ["v2"] * 4  # pinned name@version, once per item
    assert {r.params.temperature for r in with_v2.engine.requests} == {0.0}


async def test_dry_run_prints_json_and_changes_nothing(
    with_v2: FakeGateway, tmp_path: Path
) -> None:
    status, printed = await promote(
        with_v2, "pirate@v2", "--eval-set", str(eval_set(tmp_path, 5)), "--dry-run", "--json"
    )
    assert status == 0
    report = json.loads(printed)  # stdout holds the JSON alone
    assert report["passed"] is True
    assert (report["name"], report["candidate"], report["stable"]) == ("pirate", "v2", "v1")
    assert (report["items"], report["candidate_mean"], report["stable_mean"]) == (5, 1.0, 1.0)
    assert (report["low"], report["estimate"], report["high"]) == (0.0, 0.0, 0.0)
    assert report["eval_set"].startswith("eval.jsonl sha256:")
    assert await active(with_v2) == "v1"


async def test_failed_eval_requests_promote_nothing(
    with_v2: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with_v2.engine.fail_after_tokens = 0
    status, _ = await promote(with_v2, "pirate@v2", "--eval-set", str(eval_set(tmp_path)))
    assert status == 1
    assert "eval request(s) failed: nothing promoted" in capsys.readouterr().err
    assert await active(with_v2) == "v1"


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("pirate", "NAME@VERSION"),
        ("../etc@v1", "NAME@VERSION"),
        ("nobody@v1", "no adapter named 'nobody'"),
        ("pirate@v7", "has no version 'v7'"),
        ("pirate@v1", "already the active version"),
    ],
)
async def test_bad_targets_exit_2(
    with_v2: FakeGateway,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    target: str,
    message: str,
) -> None:
    status, _ = await promote(with_v2, target, "--eval-set", str(eval_set(tmp_path)))
    assert status == 2
    assert message in capsys.readouterr().err
    assert with_v2.engine.requests == []


async def test_a_bad_eval_set_exits_2_naming_the_line(
    with_v2: FakeGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "a", "lang": "en", "question": "Hi"}\n')  # checks nothing
    status, _ = await promote(with_v2, "pirate@v2", "--eval-set", str(path))
    assert status == 2
    assert "line 1: the item checks nothing" in capsys.readouterr().err
