"""``/admin/collections`` over ASGI (fake embedder) and ``loragate rag`` on the command
line: ingest by upload and by path, listings, deletes, rejections with nothing written,
and a store shared by the CLI and a gateway."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from gateway.app import create_app
from gateway.cli.main import main
from gateway.model_io.prompt_renderer import PromptRenderer
from tests.conftest import ADMIN_KEY, FakeGateway, FakeKit, fake_settings
from tests.support.documents import make_pdf
from tests.support.embedders import WordHashEmbedder
from tests.support.fakes import FakeEngine

ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
GUIDE = "# Backup guide\n\n## Nightly backups\n\nBackups run at 02:00 and keep 14 copies.\n"
FAQ = "# FAQ\n\n## Refunds\n\nRefunds reach the original card within five business days.\n"


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    root = tmp_path / "allowed"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "guide.md").write_text(GUIDE)
    (root / "docs" / "faq.md").write_text(FAQ)
    return root


async def run_gateway(
    kit: FakeKit, data_dir: Path, renderer: PromptRenderer, **retrieval: Any
) -> AsyncIterator[FakeGateway]:
    settings = fake_settings(kit, data_dir, limits={"max_request_bytes": 4096}, retrieval=retrieval)
    engine = FakeEngine(max_model_len=2048)
    app = create_app(
        settings, engine_factory=lambda _: engine, renderer=renderer, embedder=WordHashEmbedder()
    )
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            yield FakeGateway(client, engine, settings, app)


@pytest.fixture
async def gw(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, allowed: Path
) -> AsyncIterator[FakeGateway]:
    async for gateway in run_gateway(
        fake_kit, tmp_path / "data", renderer, allowed_roots=[str(allowed)], max_file_mib=1
    ):
        yield gateway


async def upload(
    client: httpx.AsyncClient, collection: str, *files: tuple[str, bytes], **fields: str
) -> httpx.Response:
    parts = [("file", (name, data, "application/octet-stream")) for name, data in files]
    return await client.post(
        f"/admin/collections/{collection}/documents", files=parts, data=fields, headers=ADMIN
    )


async def documents(client: httpx.AsyncClient, collection: str) -> httpx.Response:
    return await client.get(f"/admin/collections/{collection}/documents", headers=ADMIN)


async def test_upload_list_reingest_and_delete(gw: FakeGateway) -> None:
    big = GUIDE + "\n".join(f"Paragraph {i} about tape rotation and restores." for i in range(200))
    assert len(big) > 4096  # over the app-wide body limit: uploads have their own
    r = await upload(
        gw.client, "ops", ("guide.md", big.encode()), ("faq.pdf", make_pdf(["Refunds", "Cards"]))
    )
    assert r.status_code == 200, r.text
    assert [d["status"] for d in r.json()["data"]] == ["added", "added"]
    again = await upload(gw.client, "ops", ("guide.md", big.encode()))
    assert again.json()["data"][0]["status"] == "unchanged"
    changed = await upload(gw.client, "ops", ("guide.md", GUIDE.encode()))
    assert changed.json()["data"][0]["status"] == "replaced"

    listing = (await gw.client.get("/admin/collections", headers=ADMIN)).json()
    (card,) = listing["data"]
    assert card["name"] == "ops" and card["document_count"] == 2
    assert card["embedder"] == "word-hash" and card["version"] == 2  # unchanged: no new version
    docs = (await documents(gw.client, "ops")).json()["data"]
    assert {d["source"] for d in docs} == {"guide.md", "faq.pdf"}
    guide = next(d for d in docs if d["source"] == "guide.md")

    r = await gw.client.delete(f"/admin/collections/ops/documents/{guide['document_id']}")
    assert r.status_code == 401
    r = await gw.client.delete(
        f"/admin/collections/ops/documents/{guide['document_id']}", headers=ADMIN
    )
    assert r.json() == {
        "id": guide["document_id"],
        "object": "collection.document",
        "deleted": True,
    }
    r = await gw.client.delete(
        f"/admin/collections/ops/documents/{guide['document_id']}", headers=ADMIN
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "document_not_found"
    search = await gw.client.post(
        "/v1/retrieval/search", json={"collection": "ops", "query": "nightly backups"}
    )
    assert all(hit["source"] != "guide.md" for hit in search.json()["data"])
    assert (await gw.client.delete("/admin/collections/ops", headers=ADMIN)).status_code == 200
    assert (await documents(gw.client, "ops")).status_code == 404


@pytest.mark.parametrize(
    ("name", "data", "status", "code"),
    [
        ("notes.txt", b"\x00\x01\x02binary\xff" * 20, 422, "binary_file"),
        ("empty.md", b"  \n\n ", 422, "empty_document"),
        ("tool.exe", b"MZ....", 422, "unsupported_file_type"),
        ("broken.pdf", b"%PDF-1.4 not really", 422, "corrupt_document"),
        ("huge.md", b"# Huge\n\n" + b"word " * 300_000, 413, "file_too_large"),
    ],
)
async def test_bad_files_are_refused_and_nothing_is_written(
    gw: FakeGateway, name: str, data: bytes, status: int, code: str
) -> None:
    r = await upload(gw.client, "ops", ("good.md", GUIDE.encode()), (name, data))
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and name in error["message"]
    missing = await documents(gw.client, "ops")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "collection_not_found"


async def test_skip_errors_ingests_the_rest(gw: FakeGateway) -> None:
    r = await upload(
        gw.client, "ops", ("good.md", GUIDE.encode()), ("empty.md", b""), skip_errors="true"
    )
    assert r.status_code == 200
    good, bad = r.json()["data"]
    assert good["status"] == "added" and good["error"] is None
    assert bad["status"] == "rejected" and bad["error"]["code"] == "empty_document"


async def test_ingest_by_path_only_under_allowed_roots(
    gw: FakeGateway, allowed: Path, tmp_path: Path
) -> None:
    r = await gw.client.post(
        "/admin/collections/ops/documents", json={"path": str(allowed / "docs")}, headers=ADMIN
    )
    assert r.status_code == 200, r.text
    assert sorted(Path(d["source"]).name for d in r.json()["data"]) == ["faq.md", "guide.md"]
    outside = tmp_path / "outside.md"
    outside.write_text(FAQ)
    (allowed / "docs" / "link.md").symlink_to(outside)
    for path in (str(outside), str(allowed / "docs"), str(allowed / ".." / "outside.md")):
        r = await gw.client.post(
            "/admin/collections/ops/documents", json={"path": path}, headers=ADMIN
        )
        assert r.status_code == 400 and r.json()["error"]["code"] == "path_not_allowed", path
    r = await gw.client.post(
        "/admin/collections/ops/documents",
        json={"path": str(allowed / "missing.md")},
        headers=ADMIN,
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "source_unavailable"


async def test_admin_refusals(gw: FakeGateway) -> None:
    r = await gw.client.post("/admin/collections/ops/documents", json={"path": "/etc"})
    assert r.status_code == 401
    r = await upload(gw.client, "bad name!", ("a.md", GUIDE.encode()))
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_collection_name"
    r = await gw.client.post(
        "/admin/collections/ops/documents", json={"paths": ["x"]}, headers=ADMIN
    )
    assert r.status_code == 400 and r.json()["error"]["param"] in ("path", "paths")
    # A multipart form without a file part (only a field): nothing to ingest.
    r = await gw.client.post(
        "/admin/collections/ops/documents",
        files={"skip_errors": (None, "true")},
        headers=ADMIN,
    )
    assert r.status_code == 400
    # A form that is not multipart is not an upload at all.
    r = await gw.client.post(
        "/admin/collections/ops/documents", data={"skip_errors": "true"}, headers=ADMIN
    )
    assert r.status_code == 415


async def test_path_ingest_is_off_without_allowed_roots(
    fake_kit: FakeKit, tmp_path: Path, renderer: PromptRenderer, allowed: Path
) -> None:
    async for gw in run_gateway(fake_kit, tmp_path / "data", renderer, max_upload_mib=1):
        r = await gw.client.post(
            "/admin/collections/ops/documents", json={"path": str(allowed)}, headers=ADMIN
        )
        assert r.status_code == 400 and "disabled" in r.json()["error"]["message"]
        r = await upload(gw.client, "ops", ("big.md", b"# Big\n\n" + b"x " * 600_000))
        assert r.status_code == 413


def test_cli_ingest_list_search_delete_and_a_gateway_sees_it(
    tmp_path: Path,
    allowed: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("gateway.cli.rag.build_embedder", lambda _: WordHashEmbedder())
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["rag", "ingest", *data, "--collection", "ops", str(allowed), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["STATUS", "CHUNK_COUNT", "SOURCE", "ERROR"]
    assert out.count("added") == 2
    assert main(["rag", "ingest", *data, "--collection", "ops", str(allowed), "--no-progress"]) == 0
    assert capsys.readouterr().out.count("unchanged") == 2
    assert main(["rag", "list", *data]) == 0
    assert "ops" in capsys.readouterr().out
    assert main(["rag", "list", *data, "--collection", "ops", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {Path(d["source"]).name for d in listed} == {"faq.md", "guide.md"}
    assert main(["rag", "search", *data, "--collection", "ops", "refund card", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert "Refunds reach" in hits[0]["text"]

    def no_model(_: object) -> None:
        raise AssertionError("keyword search must not load the embedder")

    monkeypatch.setattr("gateway.cli.rag.build_embedder", no_model)
    assert main(["rag", "search", *data, "--collection", "ops", "14 copies", "--mode", "bm25"]) == 0
    assert "[1]" in capsys.readouterr().out
    monkeypatch.setattr("gateway.cli.rag.build_embedder", lambda _: WordHashEmbedder())
    faq_id = next(d["document_id"] for d in listed if d["source"].endswith("faq.md"))
    assert main(["rag", "delete", *data, "--collection", "ops", faq_id]) == 0
    assert main(["rag", "delete", *data, "--collection", "ops", faq_id]) == 1
    assert "not in collection" in capsys.readouterr().err
    empty = tmp_path / "empty.md"
    empty.write_text("")
    assert main(["rag", "ingest", *data, "--collection", "ops", str(empty), "--no-progress"]) == 1


def test_cli_reads_the_store_location_from_a_config_file(
    tmp_path: Path, allowed: Path, monkeypatch: pytest.MonkeyPatch, fake_kit: FakeKit
) -> None:
    monkeypatch.setattr("gateway.cli.rag.build_embedder", lambda _: WordHashEmbedder())
    config = tmp_path / "loragate.yaml"
    root = tmp_path / "kb"
    config.write_text(
        yaml.safe_dump({"model": {"path": str(fake_kit.base)}, "retrieval": {"root": str(root)}})
    )
    args = ["rag", "ingest", "--config", str(config), "--collection", "ops", str(allowed)]
    assert main([*args, "--no-progress"]) == 0
    assert (root / "ops" / "CURRENT").is_file()
    config.write_text("retrieval: [not, a, mapping")
    assert main(["rag", "list", "--config", str(config)]) == 2


async def test_a_gateway_searches_what_the_cli_ingested(
    fake_kit: FakeKit,
    tmp_path: Path,
    renderer: PromptRenderer,
    allowed: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("gateway.cli.rag.build_embedder", lambda _: WordHashEmbedder())
    data_dir = tmp_path / "data"
    assert (
        main(["rag", "ingest", "--data-dir", str(data_dir), "--collection", "ops", str(allowed)])
        == 0
    )
    async for gw in run_gateway(fake_kit, data_dir, renderer):
        r = await gw.client.post(
            "/v1/chat/completions",
            json={
                "model": "tiny-base",
                "messages": [{"role": "user", "content": "When do nightly backups run?"}],
                "rag": {"collection": "ops", "top_k": 1},
                "max_tokens": 2,
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["citations"][0]["title"] == "Backup guide"
