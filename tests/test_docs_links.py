"""The README stays a front door (at most 300 lines), and every relative link in it and
in ``docs/*.md`` (and ``SECURITY.md``) leads to a file that exists and, where the link
names a heading (``page.md#anchor``), to a heading of that page; every repository path
the pages quote (```gateway/...```, ```tests/...```) and every ``python -m`` module they
name exists: moving or renaming a file, a module or a heading cannot leave the docs
pointing nowhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 300

FENCE = re.compile(r"^ {0,3}(```|~~~)")
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)
CODE_PATH = re.compile(r"`((?:gateway|adapters|retrieval|loadtests|tests|deploy)/[\w./-]*)`")
MODULE = re.compile(r"python -m ((?:gateway|adapters|retrieval|loadtests)(?:\.\w+)+)")


def markdown_pages() -> list[Path]:
    return [ROOT / "README.md", ROOT / "SECURITY.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks (links there are examples, not links)."""
    kept, fence = [], ""
    for line in text.splitlines():
        opening = FENCE.match(line)
        if fence:
            if opening and opening.group(1) == fence:
                fence = ""
        elif opening:
            fence = opening.group(1)
        else:
            kept.append(line)
    return "\n".join(kept)


def anchor(heading: str) -> str:
    """GitHub's id for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    ids: set[str] = set()
    for heading in HEADING.findall(prose(page.read_text(encoding="utf-8"))):
        base = anchor(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        ids.add(base if count == 0 else f"{base}-{count}")
    return ids


def relative_links(page: Path) -> list[str]:
    text = INLINE_CODE.sub("", prose(page.read_text(encoding="utf-8")))
    return [t for t in LINK.findall(text) if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path, _, fragment = target.partition("#")
        dest = page if not path else (page.parent / path).resolve()
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target} (no heading #{fragment} in {dest.name})")
    return broken


def path_exists(quoted: str) -> bool:
    """A quoted path names a file or folder, or ``module.name`` inside a ``module.py``."""
    path = quoted.rstrip(".")
    if (ROOT / path).exists():
        return True
    module, dot, _name = path.rpartition(".")
    return bool(dot) and (ROOT / f"{module}.py").exists()


def module_exists(dotted: str) -> bool:
    path = ROOT / dotted.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__main__.py").exists()


def missing_code_references(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    paths = [p for p in CODE_PATH.findall(prose(text)) if not path_exists(p)]
    modules = [m for m in MODULE.findall(text) if not module_exists(m)]
    return [f"{p} (no such path)" for p in paths] + [
        f"python -m {m} (no such module)" for m in modules
    ]


def test_readme_is_at_most_300_lines() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines; keep it under {README_MAX_LINES} and move "
        "reference material into a docs/ page"
    )


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == [], f"broken links in {page.relative_to(ROOT)}"


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_quoted_path_and_module_exists(page: Path) -> None:
    assert missing_code_references(page) == [], f"stale paths in {page.relative_to(ROOT)}"


def test_the_readme_maps_the_docs() -> None:
    """The README links pages of docs/ (the map), and the checker sees those links."""
    links = relative_links(ROOT / "README.md")
    assert sum(link.startswith("docs/") for link in links) >= 10, links


def test_the_checker_finds_a_broken_file_and_a_broken_anchor(tmp_path: Path) -> None:
    (tmp_path / "target.md").write_text("# Title\n\n## A `code` heading: yes\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](target.md) [ok](target.md#a-code-heading-yes) [web](https://example.com)\n"
        "[gone](missing.md) [bad](target.md#nope) `[code](ignored.md)`\n"
        "```\n[example](also-ignored.md)\n```\n"
    )
    assert broken_links(page) == [
        "missing.md (no such file)",
        "target.md#nope (no heading #nope in target.md)",
    ]


def test_the_checker_finds_a_stale_path_and_module(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "`gateway/app.py` `gateway/app.create_app` `gateway/engine/` `python -m gateway.cli`\n"
        "`gateway/no_such.py` and `python -m loadtests.no_such_bench`\n"
    )
    assert missing_code_references(page) == [
        "gateway/no_such.py (no such path)",
        "python -m loadtests.no_such_bench (no such module)",
    ]
