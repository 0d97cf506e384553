"""``loragate config check`` and ``loragate keys create --offline``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.cli.main import main
from gateway.settings.keys import parse_key, verify_secret


def test_keys_create_prints_a_key_once_and_a_matching_hash(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["keys", "create", "--tenant", "acme", "--offline"]) == 0
    out = capsys.readouterr().out
    key = next(line.strip() for line in out.splitlines() if line.strip().startswith("lg-"))
    entry = yaml.safe_load(
        "\n".join(line for line in out.splitlines() if line.startswith("      "))
    )
    parsed = parse_key(key)
    assert parsed is not None and entry[0]["id"] == parsed[0]
    assert verify_secret(parsed[1], entry[0]["hash"])
    assert out.count(parsed[1]) == 1


def test_config_check_reports_the_path_of_each_bad_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = {"model": {"path": str(tmp_path)}, "tenants": {"acme": {"models": ["*"]}}}
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(good))
    assert main(["config", "check", str(path)]) == 0
    assert "OK" in capsys.readouterr().out
    bad = {
        "model": {"path": str(tmp_path)},
        "engine": {"max_lora_rank": 7},
        "tenants": {"acme": {"keys": [{"id": "abcdefgh", "hash": "plaintext-key"}]}},
    }
    path.write_text(yaml.safe_dump(bad))
    assert main(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "engine.max_lora_rank" in err
    assert "tenants.acme.keys[0].hash" in err
    assert "plaintext-key" not in err


def test_open_access_needs_loopback_or_consent(tmp_path: Path) -> None:
    path = tmp_path / "open.yaml"
    path.write_text(
        yaml.safe_dump({"model": {"path": str(tmp_path)}, "server": {"host": "0.0.0.0"}})
    )
    assert main(["config", "check", str(path)]) == 1


@pytest.mark.parametrize(
    "command",
    [["rag", "list"], ["config", "check"], ["serve"]],
)
def test_config_errors_never_print_a_value_from_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    """A misspelled key's value can be a secret: every command prints the field's path
    and pydantic's message, never the value (pydantic's own text quotes it)."""
    secret = "sk-live-0123456789abcdef"
    path = tmp_path / "loragate.yaml"
    path.write_text(
        yaml.safe_dump({"model": {"path": str(tmp_path)}, "shared_store": {"pasword": secret}})
    )
    args = (
        [*command, str(path)]
        if command == ["config", "check"]
        else [*command, "--config", str(path)]
    )
    assert main(args) != 0
    err = capsys.readouterr().err
    assert "shared_store.pasword" in err
    assert secret not in err
