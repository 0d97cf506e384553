"""The benchmark corpora: Debian documentation packages and the questions written on them.

Each corpus is a Debian package of HTML pages and a question file under ``data/``.
:func:`ensure_corpus` finds the pages where the package installs them, else downloads
the package with ``apt-get download`` and unpacks it with ``dpkg -x`` into a cache
folder (once: a second call finds the pages there). :func:`check_questions` proves that
every answer span occurs in the text the ingestion extracts from its page.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.html_text import extract_html

DATA = Path(__file__).with_name("data")


@dataclass(frozen=True)
class Corpus:
    """A documentation package: where its pages are and which questions ask about them."""

    name: str
    package: str
    pages_dir: str
    """Folder of the pages inside the package (and on an installed system)."""
    pattern: str
    """Glob of the pages under ``pages_dir``; a question's ``document`` is the page's
    path relative to it."""
    questions_file: str
    default_pages: int
    """Pages ingested by default (gold pages plus an even sample; 0: every page)."""

    def questions(self) -> list[dict[str, Any]]:
        data = json.loads((DATA / self.questions_file).read_text(encoding="utf-8"))
        questions: list[dict[str, Any]] = data["questions"]
        return questions


CORPORA = {
    "sqlite": Corpus(
        "sqlite", "sqlite3-doc", "usr/share/doc/sqlite3", "**/*.html", "sqlite_questions.json", 0
    ),
    "postgresql": Corpus(
        "postgresql",
        "postgresql-doc-15",
        "usr/share/doc/postgresql-doc-15/html",
        "*.html",
        "postgresql_questions.json",
        300,
    ),
}


def default_cache() -> Path:
    base = os.environ.get("LORAGATE_CACHE") or Path.home() / ".cache" / "loragate"
    return Path(base) / "bench-corpora"


def ensure_corpus(corpus: Corpus, cache: Path | None = None) -> Path | None:
    """The folder of ``corpus``'s pages: installed, cached, or fetched now with
    ``apt-get download`` + ``dpkg -x``. None (the reason printed) when that fails."""
    installed = Path("/") / corpus.pages_dir
    if any(installed.glob(corpus.pattern)):
        return installed
    unpacked = (cache or default_cache()) / corpus.package
    pages = unpacked / corpus.pages_dir
    if any(pages.glob(corpus.pattern)):
        return pages
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        print(f"skipped {corpus.name}: no apt-get/dpkg to fetch {corpus.package}")
        return None
    with tempfile.TemporaryDirectory(prefix="bench-deb-") as scratch:
        fetched = subprocess.run(
            ["apt-get", "download", "-qq", corpus.package],
            cwd=scratch,
            capture_output=True,
            text=True,
            check=False,
        )
        debs = sorted(Path(scratch).glob(f"{corpus.package}_*.deb"))
        if fetched.returncode != 0 or not debs:
            print(
                f"skipped {corpus.name}: apt-get download {corpus.package} failed "
                f"({fetched.stderr.strip()[-300:]}); run apt-get update first?"
            )
            return None
        staging = unpacked.with_name(f".{corpus.package}-{os.getpid()}")
        staging.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg", "-x", str(debs[-1]), str(staging)], check=True)
        shutil.rmtree(unpacked, ignore_errors=True)
        staging.rename(unpacked)
    return pages


def normal(text: str) -> str:
    """Lowercase, accents removed, whitespace collapsed."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).split())


def check_questions(corpus: Corpus, pages: Path) -> list[str]:
    """Problems with ``corpus``'s questions: a missing page, or an answer span that is
    not in the text extracted from its page (case, accents and whitespace ignored)."""
    problems = []
    texts: dict[str, str] = {}
    for question in corpus.questions():
        document = question["document"]
        path = pages / document
        if not path.is_file():
            problems.append(f"{corpus.name} #{question['id']}: no page {document}")
            continue
        if document not in texts:
            extracted = extract_html(path.read_bytes(), str(path), path.stem)
            texts[document] = normal(extracted.text)
        if normal(question["answer"]) not in texts[document]:
            problems.append(
                f"{corpus.name} #{question['id']}: {question['answer']!r} not in {document}"
            )
    return problems


def select_pages(pages: Path, corpus: Corpus, count: int) -> list[Path]:
    """Gold pages plus every n-th other page (sorted by path) up to ``count`` pages."""
    every = sorted(p for p in pages.glob(corpus.pattern) if p.is_file())
    if count <= 0 or count >= len(every):
        return every
    gold = {q["document"] for q in corpus.questions()}
    chosen = [p for p in every if p.relative_to(pages).as_posix() in gold]
    others = [p for p in every if p.relative_to(pages).as_posix() not in gold]
    wanted = max(count - len(chosen), 0)
    step = len(others) / max(wanted, 1)
    chosen += [others[int(i * step)] for i in range(min(wanted, len(others)))]
    return sorted(chosen)
