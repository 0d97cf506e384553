"""Crash safety: a process killed mid-ingest leaves the previous version answering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from retrieval import CollectionStore, IngestStatus
from tests.support.embedders import WordHashEmbedder

pytestmark = pytest.mark.integration  # kills ingest processes

REPO_ROOT = Path(__file__).resolve().parents[1]

# The child ingests a large file into the shared store and stops (touching ``marker``
# and sleeping) at the stage named by ``stage``, where the parent kills it.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path

    import retrieval.collection as collection
    import retrieval.index as index
    from retrieval import CollectionStore
    from tests.support.embedders import WordHashEmbedder

    root, document, marker, stage = sys.argv[1:5]

    def stop_here():
        Path(marker).touch()
        time.sleep(600)

    class StallingEmbedder(WordHashEmbedder):
        def embed_documents(self, texts):
            if stage == "embedding":
                stop_here()
            return super().embed_documents(texts)

    if stage == "writing":  # the index file is half written when the process dies
        def partial_save(self, path):
            Path(path).write_bytes(b"IxFI partial")
            stop_here()
        index.DenseIndex.save = partial_save
    if stage == "pointer":  # the new version directory is complete, the pointer is not
        def stalled_replace(source, target):
            stop_here()
        collection.os.replace = stalled_replace

    store = CollectionStore(root, StallingEmbedder())
    store.ingest("kb", [document])
    Path(marker).with_suffix(".done").touch()
    """
)

OLD_TEXT = "# Old manual\n\nThe vacuum pump needs a new gasket every spring.\n"


def big_document(path: Path) -> Path:
    sections = [
        f"## Topic {i}\n\nThe turbine {i} inspection covers blades, seals and bearings.\n"
        for i in range(300)
    ]
    path.write_text("# New manual\n\n" + "\n".join(sections))
    return path


def run_child_until(root: Path, document: Path, stage: str, tmp_path: Path) -> None:
    marker = tmp_path / f"{stage}.marker"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), str(document), str(marker), stage],
        cwd=REPO_ROOT,
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            if child.poll() is not None:
                assert child.stderr is not None
                pytest.fail(f"child exited early: {child.stderr.read().decode()}")
            assert time.monotonic() < deadline, "child never reached the stage"
            time.sleep(0.02)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
        if child.stderr is not None:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL


@pytest.mark.parametrize("stage", ["embedding", "writing", "pointer"])
def test_killed_ingest_leaves_previous_index_usable(tmp_path: Path, stage: str) -> None:
    root = tmp_path / "store"
    old = tmp_path / "old.md"
    old.write_text(OLD_TEXT)
    store = CollectionStore(root, WordHashEmbedder())
    store.ingest("kb", [old])
    before = store.search("kb", "gasket vacuum pump", k=1)
    new = big_document(tmp_path / "new.md")

    run_child_until(root, new, stage, tmp_path)

    leftovers = {p.name for p in (root / "kb").iterdir()}
    if stage == "writing":
        assert any(name.startswith(".tmp-") for name in leftovers)
    if stage == "pointer":
        assert "v00000002" in leftovers
    for reader in (store, CollectionStore(root, WordHashEmbedder())):
        assert reader.search("kb", "gasket vacuum pump", k=1) == before
        assert reader.search("kb", "turbine inspection blades", k=3, mode="bm25") == []
        assert [d.title for d in reader.list_documents("kb")] == ["Old manual"]
        assert reader.list_collections()[0].version == 1

    # The next writer starts from the intact version and clears the debris.
    (result,) = store.ingest("kb", [new])
    assert result.status is IngestStatus.ADDED
    assert store.search("kb", "turbine 7 inspection", k=1, mode="bm25")[0].title == "New manual"
    assert store.search("kb", "gasket vacuum pump", k=1)[0].title == "Old manual"
    names = {p.name for p in (root / "kb").iterdir()}
    assert names == {"CURRENT", "v00000001", "v00000002"}


def test_reader_sees_a_commit_made_by_another_process(tmp_path: Path) -> None:
    root = tmp_path / "store"
    old = tmp_path / "old.md"
    old.write_text(OLD_TEXT)
    store = CollectionStore(root, WordHashEmbedder())
    store.ingest("kb", [old])
    new = big_document(tmp_path / "new.md")
    marker = tmp_path / "x.marker"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}

    subprocess.run(
        [sys.executable, "-c", CHILD, str(root), str(new), str(marker), "none"],
        cwd=REPO_ROOT,
        env=env,
        check=True,
        timeout=120,
    )

    assert marker.with_suffix(".done").exists()
    assert store.search("kb", "turbine inspection", k=1, mode="bm25")[0].title == "New manual"
    assert len(store.list_documents("kb")) == 2
