"""``loragate rag ingest FOLDER`` ingests what lies in the folder: a file inside that
is a link to a place outside it (a cloned repository can carry one to a secret) is
refused, and nothing is ingested, unless ``--follow-outside-links``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli.main import main
from tests.support.embedders import WordHashEmbedder

SECRET = "db password hunter2"


@pytest.fixture
def docs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr("gateway.cli.rag.build_embedder", lambda _: WordHashEmbedder())
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "guide.md").write_text("# Guide\n\nRefunds reach the card in five days.\n")
    (folder / "sub" / "faq.md").write_text("# FAQ\n\nShipping takes a week.\n")
    (folder / "alias.md").symlink_to(folder / "guide.md")  # a link inside: fine
    secret = tmp_path / "secret.md"
    secret.write_text(f"# Secret\n\n{SECRET}\n")
    (folder / "sub" / "notes.md").symlink_to(secret)
    return folder


def ingested_text(data: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["rag", "list", *data, "--collection", "ops", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    return " ".join(d["source"] for d in listed)


def test_a_link_out_of_the_folder_is_refused_and_nothing_ingested(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    args = ["rag", "ingest", *data, "--collection", "ops", str(docs), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "notes.md leads outside the folder" in err and "--follow-outside-links" in err
    assert SECRET not in err
    assert main(["rag", "search", *data, "--collection", "ops", "hunter2", "--mode", "bm25"]) != 0


def test_the_flag_follows_it_and_links_inside_the_folder_are_fine(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    (docs / "sub" / "notes.md").unlink()
    args = ["rag", "ingest", *data, "--collection", "ops", str(docs), "--no-progress"]
    assert main(args) == 0  # alias.md leads to guide.md, inside: not refused
    capsys.readouterr()
    assert "secret.md" not in ingested_text(data, capsys)
    (docs / "sub" / "notes.md").symlink_to(tmp_path / "secret.md")
    assert main([*args, "--follow-outside-links"]) == 0
    capsys.readouterr()
    assert "secret.md" in ingested_text(data, capsys)


def test_a_file_named_on_the_command_line_is_taken_as_named(
    docs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = ["--data-dir", str(tmp_path / "data")]
    link = docs / "sub" / "notes.md"
    assert main(["rag", "ingest", *data, "--collection", "ops", str(link), "--no-progress"]) == 0
    capsys.readouterr()
    assert "secret.md" in ingested_text(data, capsys)
