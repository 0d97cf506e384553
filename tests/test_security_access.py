"""Who may call the gateway, and what a reload may change (issue 11, items 1-3).

* open mode (no tenants, no admin keys) is decided on the address actually bound,
  ``loragate serve --host`` included;
* a reload never switches API keys off, and applies a new ``admin.api_key``;
* a broken config file is reported by line and column, never by its text.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

import gateway.cli.main
from gateway.app import create_app
from gateway.cli.main import main
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import Settings, is_loopback_host
from gateway.settings.keys import generate_key
from tests.conftest import FakeKit
from tests.support.fakes import FakeEngine

OLD_ADMIN_KEY = "old-admin-key-0123456789"
NEW_ADMIN_KEY = "new-admin-key-9876543210"
TENANT = generate_key()
SECRET = "hunter2-do-not-print-me"


def base_config(kit: FakeKit, data_dir: Path, **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": {"path": str(kit.base), "name": "tiny-base"},
        "registry": {"data_dir": str(data_dir)},
        "admin": {"api_key": OLD_ADMIN_KEY},
        "tenants": {
            "acme": {"keys": [{"id": TENANT.key_id, "hash": TENANT.hash}], "models": ["*"]}
        },
    }
    data.update(sections)
    return data


@dataclass
class Served:
    client: httpx.AsyncClient
    path: Path

    def write(self, data: dict[str, Any] | str) -> None:
        self.path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))

    async def reload(self, key: str = OLD_ADMIN_KEY) -> httpx.Response:
        return await self.client.post("/admin/config/reload", headers=bearer(key))


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
async def served(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer
) -> AsyncIterator[Served]:
    path = tmp_path / "loragate.yaml"
    path.write_text(yaml.safe_dump(base_config(fake_kit, tmp_path / "data")))
    engine = FakeEngine()
    app = create_app(
        Settings.load(path), engine_factory=lambda _: engine, renderer=renderer, config_path=path
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield Served(client, path)


# -- 1. open mode follows the address actually bound ------------------------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("192.168.1.10", False),
        ("::ffff:127.0.0.1", False),  # the IPv6 socket would also accept IPv4 peers
        ("example.com", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """What ``loragate serve`` would have bound (uvicorn is never started)."""
    calls: list[Settings] = []

    def fake_serve(
        settings: Settings, config_path: Path | None = None, overrides: object = None
    ) -> None:
        calls.append(settings)

    monkeypatch.setattr(gateway.cli.main, "_serve", fake_serve)
    return calls


def write(tmp_path: Path, data: dict[str, Any]) -> str:
    path = tmp_path / "loragate.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "gateway.example.com"])
def test_serve_host_override_without_keys_refuses_to_start(
    tmp_path: Path, started: list[Settings], capsys: pytest.CaptureFixture[str], host: str
) -> None:
    path = write(tmp_path, {"model": {"path": str(tmp_path)}})  # no tenants: open mode
    assert main(["serve", "--config", path, "--host", host]) == 2
    assert started == []
    err = capsys.readouterr().err
    assert f"server.host {host} is reachable" in err and "allow_open_access" in err


def test_serve_host_override_is_allowed_with_keys_loopback_or_consent(
    tmp_path: Path, started: list[Settings], fake_kit: FakeKit
) -> None:
    keyed = write(tmp_path, base_config(fake_kit, tmp_path / "data"))
    assert main(["serve", "--config", keyed, "--host", "0.0.0.0", "--port", "9001"]) == 0
    assert (started[-1].server.host, started[-1].server.port) == ("0.0.0.0", 9001)
    open_file = {"model": {"path": str(tmp_path)}}
    assert main(["serve", "--config", write(tmp_path, open_file), "--host", "::1"]) == 0
    assert started[-1].server.host == "::1"
    consent = {**open_file, "server": {"allow_open_access": True}}
    assert main(["serve", "--config", write(tmp_path, consent), "--host", "0.0.0.0"]) == 0
    assert started[-1].server.host == "0.0.0.0"


def test_serve_prints_field_paths_not_values(
    tmp_path: Path, started: list[Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = {
        "model": {"path": str(tmp_path)},
        "tenants": {"acme": {"keys": [{"id": "abcdefgh", "hash": SECRET}]}},
    }
    assert main(["serve", "--config", write(tmp_path, bad)]) == 2
    err = capsys.readouterr().err
    assert "tenants.acme.keys[0].hash" in err and SECRET not in err and started == []


async def test_reload_that_would_switch_keys_off_is_refused(
    served: Served, fake_kit: FakeKit, tmp_path: Path
) -> None:
    keyless = base_config(fake_kit, tmp_path / "data", tenants={}, admin={"api_key": None})
    served.write(keyless)
    r = await served.reload()
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_config" and "without API keys" in error["message"]
    assert (await served.client.get("/v1/models")).status_code == 401  # still keyed
    assert (await served.client.get("/v1/models", headers=bearer(TENANT.key))).status_code == 200


# -- 2. the admin key is rotated by a reload ---------------------------------------------


async def test_reload_rotates_the_admin_api_key(
    served: Served, fake_kit: FakeKit, tmp_path: Path
) -> None:
    assert (await served.client.get("/admin/adapters", headers=bearer(OLD_ADMIN_KEY))).is_success
    served.write(base_config(fake_kit, tmp_path / "data", admin={"api_key": NEW_ADMIN_KEY}))
    r = await served.reload(OLD_ADMIN_KEY)
    assert r.status_code == 200, r.text
    old = await served.client.get("/admin/adapters", headers=bearer(OLD_ADMIN_KEY))
    assert old.status_code == 401
    new = await served.client.get("/admin/adapters", headers=bearer(NEW_ADMIN_KEY))
    assert new.status_code == 200
    assert (await served.reload(NEW_ADMIN_KEY)).status_code == 200


# -- 3. broken files: line and column, never the text; non-string keys are a 400 ---------

SECRET_ON_BAD_LINE = f"model: {{path: /x}}\nadmin:\n  api_key: {SECRET}: oops\n"
NON_STRING_KEY = "model: {path: /x}\n1: x\n"


async def test_reload_reports_yaml_errors_by_position_only(served: Served) -> None:
    served.write(SECRET_ON_BAD_LINE)
    r = await served.reload()
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_config"
    message = r.json()["error"]["message"]
    assert "line 3, column" in message and SECRET not in message and "oops" not in message


async def test_reload_of_non_string_top_level_keys_is_a_400(served: Served) -> None:
    served.write(NON_STRING_KEY)
    r = await served.reload()
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_config"
    assert "section names" in r.json()["error"]["message"]
    assert (await served.client.get("/v1/models", headers=bearer(TENANT.key))).status_code == 200


@pytest.mark.parametrize(
    ("text", "expected"),
    [(SECRET_ON_BAD_LINE, "line 3, column"), (NON_STRING_KEY, "section names")],
)
def test_config_check_reports_broken_files_without_their_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    assert main(["config", "check", str(path)]) == 1
    err = capsys.readouterr().err
    assert expected in err and SECRET not in err and "oops" not in err
