"""Folders that appear whole or not at all: write into a temporary sibling, then rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TMP_SUFFIX = ".tmp"


@contextmanager
def atomic_directory(target: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of ``target``; rename it to ``target`` on success.

    On any exception (or interrupt) the temporary folder is deleted and ``target`` is
    untouched. Raises ``FileExistsError`` if ``target`` exists before or after the
    work (``rename`` would silently replace an empty folder). The result is readable
    by everyone (folders 0755, files 0644), like an installed package, although
    ``mkdtemp`` and safetensors create private ones.
    """
    target = Path(target)
    if target.exists():
        raise FileExistsError(f"{target} already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent))
    try:
        yield tmp
        _make_readable(tmp)
        if target.exists():
            raise FileExistsError(f"{target} appeared while it was being built")
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _make_readable(root: Path) -> None:
    os.chmod(root, 0o755)
    for path in root.rglob("*"):
        if not path.is_symlink():
            os.chmod(path, 0o755 if path.is_dir() else 0o644)
