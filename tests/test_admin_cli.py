"""``loragate adapters ...`` against the in-process app (fake engine), and ``train``."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from gateway.cli.admin import format_table, run_admin_command
from gateway.cli.main import build_parser
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit
from tests.support.admin_requests import new_adapter
from tests.support.modelkit import tiny_llama_dir

DATASET = Path(__file__).parent.parent / "adapters" / "tooling" / "data" / "pirate.jsonl"


async def run(
    gateway: FakeGateway | None, *argv: str, key: str = ADMIN_KEY
) -> tuple[int, str, str]:
    args = build_parser().parse_args(
        ["adapters", *argv, "--url", "http://gateway", "--admin-key", key]
    )
    out, err = io.StringIO(), io.StringIO()
    transport = httpx.ASGITransport(app=gateway.app) if gateway else None
    code = await run_admin_command(args, transport=transport, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_list_prints_a_table(fake_gateway: FakeGateway) -> None:
    code, out, _ = await run(fake_gateway, "list")
    assert code == 0
    header, pirate, robot = out.splitlines()[:3]
    assert header.split() == [
        "NAME",
        "VERSION",
        "STATUS",
        "PINNED",
        "RESIDENCY",
        "IN_FLIGHT",
        "REQUESTS",
        "LORA_ID",
        "SOURCE",
    ]
    assert pirate.split()[:8] == ["pirate", "v1", "active", "-", "cpu_cache", "0", "0", "1"]
    assert robot.startswith("robot")
    assert "slot table" in out  # the fake engine reports none


async def test_every_subcommand_round_trips(fake_gateway: FakeGateway, fake_kit: FakeKit) -> None:
    first, second = new_adapter(fake_kit, seed=81), new_adapter(fake_kit, seed=82)
    code, out, err = await run(fake_gateway, "register", "cli", "--path", str(first))
    assert code == 0, err
    assert json.loads(out)["ref"] == "cli@v1"
    code, out, _ = await run(
        fake_gateway, "register", "cli", "--upload-dir", str(second), "--no-activate"
    )
    assert code == 0 and json.loads(out)["status"] == "inactive"
    assert (await run(fake_gateway, "prewarm", "cli", "--version", "v2"))[0] == 0
    code, out, _ = await run(fake_gateway, "activate", "cli", "v2")
    assert code == 0 and json.loads(out)["active_version"] == "v2"
    code, out, _ = await run(fake_gateway, "pin", "cli")
    assert json.loads(out)["versions"][1]["pinned"] is True
    code, out, err = await run(fake_gateway, "retire", "cli")
    assert code == 1 and "adapter_pinned" in err
    assert (await run(fake_gateway, "unpin", "cli"))[0] == 0
    code, out, _ = await run(fake_gateway, "retire", "cli", "--version", "v1")
    assert code == 0 and json.loads(out)["retired"] == ["cli@v1"]
    code, out, _ = await run(fake_gateway, "show", "cli", "--json")
    assert [v["version"] for v in json.loads(out)["versions"]][-1] == "v2"


async def test_refusals_are_reported_with_exit_status_1(fake_gateway: FakeGateway) -> None:
    code, _, err = await run(fake_gateway, "list", key="wrong-key-wrong-key")
    assert code == 1 and "HTTP 401" in err
    code, _, err = await run(fake_gateway, "show", "nobody")
    assert code == 1 and "HTTP 404" in err
    code, _, err = await run(None, "list")  # nothing listens on http://gateway
    assert code == 1 and "cannot reach the gateway" in err


def test_table_of_an_empty_listing() -> None:
    assert format_table({"data": [], "slots_known": True}).split()[0] == "NAME"


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """``loragate adapters train`` once (2 steps on the tiny model): its folder and status."""
    out = tmp_path_factory.mktemp("train") / "persona"
    argv = ["adapters", "train", "--base", str(tiny_llama_dir()), "--data", str(DATASET)]
    args = build_parser().parse_args([*argv, "--out", str(out), "--steps", "2"])
    return out, args.func(args)


def test_train_writes_a_registry_ready_adapter(trained: tuple[Path, int]) -> None:
    out, status = trained
    assert status == 0
    files = {p.name for p in out.iterdir()}
    assert files == {"adapter_config.json", "adapter_model.safetensors", "loragate_training.json"}
    metadata = json.loads((out / "loragate_training.json").read_text())
    assert metadata["steps"] == 2 and metadata["dataset_sha256"]
    argv = ["adapters", "train", "--base", str(tiny_llama_dir()), "--data", str(DATASET)]
    again = build_parser().parse_args([*argv, "--out", str(out), "--steps", "2"])
    assert again.func(again) == 2  # the folder exists: refused, nothing overwritten


async def test_a_trained_adapter_registers_by_upload(
    fake_gateway: FakeGateway, trained: tuple[Path, int]
) -> None:
    code, out, err = await run(fake_gateway, "register", "persona", "--upload-dir", str(trained[0]))
    assert code == 0, err
    assert json.loads(out)["status"] == "active"
    r = await fake_gateway.client.post(
        "/v1/chat/completions",
        json={"model": "persona", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert r.status_code == 200
