"""Requests the admin tests send: admin headers, registration, chat, archives, promotion."""

from __future__ import annotations

import io
import tarfile
import uuid
import zipfile
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import ADMIN_KEY, FakeKit
from tests.support.modelkit import write_random_adapter

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
MESSAGES = [{"role": "user", "content": "Hello"}]


def new_adapter(kit: FakeKit, seed: int, **options: Any) -> Path:
    """A fresh, valid adapter folder under the gateway's allowed root."""
    return write_random_adapter(
        kit.base, kit.adapter_root / f"new-{uuid.uuid4().hex}", seed=seed, **options
    )


async def register(
    client: httpx.AsyncClient, name: str, path: Path, **fields: Any
) -> httpx.Response:
    return await client.post(
        "/admin/adapters", json={"name": name, "path": str(path), **fields}, headers=ADMIN
    )


async def chat(client: httpx.AsyncClient, model: str, **fields: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, "max_tokens": 2, **fields}
    return await client.post("/v1/chat/completions", json=body)


def zip_of(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for file in sorted(folder.iterdir()):
            zf.write(file, file.name)
    return buffer.getvalue()


def tar_gz_of(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for file in sorted(folder.iterdir()):
            tf.add(file, arcname=file.name)
    return buffer.getvalue()


async def upload(
    client: httpx.AsyncClient, name: str, filename: str, data: bytes, **fields: str
) -> httpx.Response:
    return await client.post(
        "/admin/adapters",
        data={"name": name, **fields},
        files={"file": (filename, data, "application/octet-stream")},
        headers=ADMIN,
    )


PASSING_GATE: dict[str, Any] = {
    "items": 6,
    "candidate_mean": 1.0,
    "stable_mean": 0.5,
    "low": 0.17,
    "high": 0.83,
    "confidence": 0.95,
    "margin": 0.0,
    "resamples": 2000,
    "seed": 0,
    "eval_set": "eval.jsonl sha256:0123456789abcdef",
}
"""The figures of an evaluation gate the candidate passed (the promote route's ``gate``)."""


async def promote(
    client: httpx.AsyncClient, version: str, stable: str, name: str = "pirate", **extra: Any
) -> httpx.Response:
    """``POST /admin/adapters/{name}/promote`` with a passing gate (``extra`` overrides)."""
    body = {"version": version, "stable": stable, "gate": PASSING_GATE, **extra}
    return await client.post(f"/admin/adapters/{name}/promote", json=body, headers=ADMIN)
