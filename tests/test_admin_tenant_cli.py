"""``loragate keys|tenants|audit`` against the in-process app (fake engine), and
``loragate config check``'s merged view of the file's and the store's tenants."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import httpx
import pytest

from gateway.cli.main import build_parser, main
from gateway.cli.tenants import run_tenant_command
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import parse_key
from tests.conftest import FakeKit
from tests.support.tenant_admin_support import ADMIN_KEY, Gateway, started, tenant_config


async def run(gw: Gateway, *argv: str, key: str = ADMIN_KEY.key) -> tuple[int, str, str]:
    args = build_parser().parse_args([*argv, "--url", "http://gw", "--admin-key", key])
    out, err = io.StringIO(), io.StringIO()
    transport = httpx.ASGITransport(app=gw.app)
    code = await run_tenant_command(args, transport=transport, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


async def test_tenants_and_keys_from_the_command_line(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    definition = tmp_path / "globex.yaml"
    definition.write_text("models: [robot]\nweight: 2\n")
    config = tenant_config(fake_kit, tmp_path / "data")
    async with started(config, tmp_path / "gw", renderer) as gw:
        code, out, err = await run(gw, "tenants", "create", "globex", "--file", str(definition))
        assert code == 0, err
        assert json.loads(out)["weight"] == 2
        code, out, _ = await run(
            gw, "tenants", "update", "globex", "--set", "models=[robot, pirate]"
        )
        assert code == 0 and json.loads(out)["models"] == ["robot", "pirate"]
        code, out, _ = await run(gw, "tenants", "list")
        assert [line.split()[:2] for line in out.splitlines()] == [
            ["NAME", "SOURCE"], ["acme", "config"], ["globex", "api"]
        ]  # fmt: skip

        code, out, err = await run(
            gw, "keys", "create", "--tenant", "globex", "--name", "deploy", "--expires-in", "30d",
            "--models", "pirate", "--budget-period", "day", "--budget-tokens", "5000",
        )  # fmt: skip
        assert code == 0, err
        key = next(w for w in out.split() if w.startswith("lg-"))
        assert (await gw.chat(key, model="pirate")).status_code == 200
        assert (await gw.chat(key, model="robot")).status_code == 404  # the key's models
        code, out, _ = await run(gw, "keys", "list", "--tenant", "globex")
        header, row = out.splitlines()
        assert header.split() == [
            "ID", "NAME", "CREATED", "EXPIRES", "LAST_USED", "BUDGET", "SPENT_TOKENS"
        ]  # fmt: skip
        parsed = parse_key(key)
        assert parsed is not None
        key_id, secret = parsed
        assert row.split()[:2] == [key_id, "deploy"] and "5000 tok per day" in row
        assert secret not in out

        code, out, _ = await run(gw, "keys", "revoke", "--tenant", "globex", key_id)
        assert code == 0 and json.loads(out)["deleted"] is True
        assert (await gw.chat(key, model="pirate")).status_code == 401
        code, out, _ = await run(gw, "audit", "--limit", "2")
        lines = out.splitlines()
        assert lines[0].split()[:4] == ["SEQ", "AT", "ACTOR", "ACTION"]
        assert [line.split()[3] for line in lines[1:]] == ["key.revoke", "key.create"]
        assert f"key:{ADMIN_KEY.key_id}" in lines[1]


async def test_refusals_exit_1_and_bad_arguments_exit_2(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> None:
    config = tenant_config(fake_kit, tmp_path / "data")
    async with started(config, tmp_path / "gw", renderer) as gw:
        code, _, err = await run(gw, "keys", "list", "--tenant", "nobody")
        assert code == 1 and "HTTP 404" in err
        code, _, err = await run(gw, "tenants", "update", "acme", "--set", "weight=2")
        assert code == 1 and "tenant_in_config" in err
        code, _, err = await run(gw, "keys", "create", "--tenant", "acme", "--expires-at", "5")
        assert code == 1 and "expires_at" in err
        code, _, err = await run(gw, "keys", "create", "--tenant", "acme", "--expires-in", "soon")
        assert code == 2 and "--expires-in" in err
        code, _, err = await run(gw, "tenants", "list", key="lg-0123456789ab-" + "x" * 43)
        assert code == 1 and "HTTP 401" in err


def test_expires_in_counts_from_now() -> None:
    from gateway.cli.tenants import key_body

    args = build_parser().parse_args(["keys", "create", "--tenant", "t", "--expires-in", "2h"])
    assert key_body(args, now=1000.0) == {"name": "cli", "expires_at": 1000 + 7200}


async def test_config_check_shows_the_file_and_the_store_merged(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tenant_config(fake_kit, tmp_path / "data")
    async with started(config, tmp_path / "gw", renderer) as gw:
        await run(gw, "tenants", "create", "globex", "--set", "models=[robot]")
        await run(
            gw, "keys", "create", "--tenant", "acme", "--expires-at", str(int(time.time()) + 99)
        )
        path = gw.config_path
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "the config file wins" in out and "tenants.db" in out
    assert "acme: config, 1 file key(s) + 1 API key(s), models tiny-base, pirate" in out
    assert "globex: api, 0 file key(s) + 0 API key(s), models robot" in out
    assert main(["config", "check", str(path), "--file-only"]) == 0
    assert "globex" not in capsys.readouterr().out
