"""Every refused adapter gets its 400/422 through the admin API and never reaches the engine."""

from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch
from safetensors.torch import load_file, save_file

from gateway.engine.interface import AdapterLoadRefused
from tests.conftest import FakeGateway, FakeKit
from tests.support.admin_requests import ADMIN, chat, new_adapter, register, upload, zip_of

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"


def _edit_config(folder: Path, **changes: object) -> Path:
    config = json.loads((folder / CONFIG).read_text())
    config.update(changes)
    (folder / CONFIG).write_text(json.dumps(config))
    return folder


def _wrong_shape(folder: Path) -> Path:
    tensors = load_file(folder / WEIGHTS)
    key = next(k for k in tensors if k.endswith("lora_A.weight"))
    tensors[key] = torch.zeros(8, 7, dtype=torch.bfloat16)
    save_file(tensors, str(folder / WEIGHTS))
    return folder


def _with_pickle(folder: Path) -> Path:
    (folder / "adapter_model.bin").write_bytes(b"\x80\x04K\x01.")  # pickle of the int 1
    return folder


def _unparsable_config(folder: Path) -> Path:
    (folder / CONFIG).write_text("{oops")
    return folder


def _without_config(folder: Path) -> Path:
    (folder / CONFIG).unlink()
    return folder


def _symlink_out(folder: Path) -> Path:
    outside = folder.parent.parent / f"secret-{folder.name}"
    outside.write_text("not yours")
    os.symlink(outside, folder / "notes.txt")
    return folder


FOLDER_CASES: dict[str, tuple[Callable[[Path], Path], int, str]] = {
    "pickle weights": (_with_pickle, 422, "unsafe_weights_format"),
    "rank above max_lora_rank": (lambda f: f, 422, "lora_rank_too_large"),
    "unknown target module": (
        lambda f: _edit_config(f, target_modules=["q_proj", "gate_projection"]),
        422,
        "unknown_target_module",
    ),
    "tensor shape": (_wrong_shape, 422, "tensor_shape_mismatch"),
    "another base model": (
        lambda f: _edit_config(f, base_model_name_or_path="someone/other-model"),
        422,
        "base_model_mismatch",
    ),
    "missing config": (_without_config, 422, "adapter_config_missing"),
    "unparsable config": (_unparsable_config, 422, "invalid_adapter_config"),
    "symlink out of the root": (_symlink_out, 400, "source_not_allowed"),
}


async def _assert_never_reached_engine(gateway: FakeGateway, name: str) -> None:
    assert [a.name for a in gateway.engine.added] == ["pirate", "robot"]
    assert gateway.engine.requests == []
    r = await chat(gateway.client, name)
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    data_dir = gateway.settings.registry.data_dir
    assert not (data_dir / "adapters" / name).exists()
    assert list((data_dir / "staging").iterdir()) == []


@pytest.mark.parametrize("case", sorted(FOLDER_CASES))
async def test_refused_folders(fake_gateway: FakeGateway, fake_kit: FakeKit, case: str) -> None:
    spoil, status, code = FOLDER_CASES[case]
    rank = 32 if case == "rank above max_lora_rank" else 8
    folder = spoil(new_adapter(fake_kit, seed=70, rank=rank))
    r = await register(fake_gateway.client, "refused", folder)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    await _assert_never_reached_engine(fake_gateway, "refused")


def _climbing(root: Path, target: Path) -> Path:
    """``root/../../target``: a path that starts in the root and climbs out of it."""
    return root / os.path.relpath(target, root)


async def test_paths_outside_the_allowed_roots(
    fake_gateway: FakeGateway, fake_kit: FakeKit, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(new_adapter(fake_kit, seed=71), outside)
    climbing = _climbing(fake_kit.adapter_root, outside)
    assert ".." in climbing.parts
    for path in (outside, climbing, Path("/etc")):
        r = await register(fake_gateway.client, "refused", path)
        assert (r.status_code, r.json()["error"]["code"]) == (400, "source_not_allowed"), path
    uri = await fake_gateway.client.post(
        "/admin/adapters", json={"name": "refused", "uri": f"file://{outside}"}, headers=ADMIN
    )
    assert (uri.status_code, uri.json()["error"]["code"]) == (400, "source_not_allowed")
    ftp = await fake_gateway.client.post(
        "/admin/adapters", json={"name": "refused", "uri": "ftp://host/a"}, headers=ADMIN
    )
    assert (ftp.status_code, ftp.json()["error"]["code"]) == (400, "source_not_allowed")
    await _assert_never_reached_engine(fake_gateway, "refused")


@pytest.mark.parametrize("name", ["../evil", "Upper", "a/b", "", "x" * 65, "a@b"])
async def test_bad_names(fake_gateway: FakeGateway, fake_kit: FakeKit, name: str) -> None:
    r = await register(fake_gateway.client, name, new_adapter(fake_kit, seed=72))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_adapter_name"
    bad_version = await register(
        fake_gateway.client, "fine", new_adapter(fake_kit, seed=72), version="../v1"
    )
    assert bad_version.status_code == 400
    assert bad_version.json()["error"]["code"] == "invalid_adapter_version"
    assert [a.name for a in fake_gateway.engine.added] == ["pirate", "robot"]


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buffer.getvalue()


async def test_refused_archives(fake_gateway: FakeGateway, fake_kit: FakeKit) -> None:
    folder = new_adapter(fake_kit, seed=73)
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    cases = {
        "zip slip": (_zip({f"../../{k}": v for k, v in files.items()}), "archive_path_traversal"),
        "absolute": (_zip({f"/tmp/{k}": v for k, v in files.items()}), "archive_absolute_path"),
        "not an archive": (b"hello", "invalid_archive"),
    }
    for label, (data, code) in cases.items():
        r = await upload(fake_gateway.client, "refused", "adapter.zip", data)
        assert r.status_code == 400, label
        assert r.json()["error"]["code"] in (code, "unsupported_archive"), (label, r.text)
    pickled = _zip({**files, "extra.pt": b"\x80\x04K\x01."})
    r = await upload(fake_gateway.client, "refused", "adapter.zip", pickled)
    assert (r.status_code, r.json()["error"]["code"]) == (422, "unsafe_weights_format")
    await _assert_never_reached_engine(fake_gateway, "refused")


async def test_uploads_must_declare_their_size(
    fake_gateway: FakeGateway, fake_kit: FakeKit
) -> None:
    body = zip_of(new_adapter(fake_kit, seed=74))
    request = fake_gateway.client.build_request(
        "POST",
        "/admin/adapters",
        data={"name": "refused"},
        files={"file": ("a.zip", body, "application/zip")},
        headers=ADMIN,
    )
    del request.headers["Content-Length"]
    request.headers["Transfer-Encoding"] = "chunked"
    r = await fake_gateway.client.send(request)
    assert r.status_code == 400 and r.json()["error"]["code"] == "length_required"
    await _assert_never_reached_engine(fake_gateway, "refused")


async def test_an_engine_that_refuses_the_weights_leaves_nothing_behind(
    fake_gateway: FakeGateway, fake_kit: FakeKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def refuse(adapter: object) -> bool:
        raise AdapterLoadRefused("bad LoRA weights")

    monkeypatch.setattr(fake_gateway.engine, "load", refuse)
    r = await register(fake_gateway.client, "broken", new_adapter(fake_kit, seed=75))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "engine_load_failed")
    listing = await fake_gateway.client.get("/admin/adapters", headers=ADMIN)
    assert "broken" not in {a["name"] for a in listing.json()["data"]}
    assert (await chat(fake_gateway.client, "broken")).status_code == 404


async def test_an_engine_bug_while_loading_is_a_500_not_a_bad_adapter(
    fake_gateway: FakeGateway,
    fake_kit: FakeKit,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Only the engine's ``AdapterLoadRefused`` blames the adapter: any other error is the
    server's, answered 500 and logged with its traceback."""

    async def crash(adapter: object) -> bool:
        raise RuntimeError("engine bug")

    monkeypatch.setattr(fake_gateway.engine, "load", crash)
    transport = httpx.ASGITransport(app=fake_gateway.app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        r = await register(client, "unlucky", new_adapter(fake_kit, seed=76))
    assert r.status_code == 500
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    assert "engine bug" not in r.text
    assert any(rec.exc_info and "engine bug" in str(rec.exc_info[1]) for rec in caplog.records)
