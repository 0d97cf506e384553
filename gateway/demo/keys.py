"""``DemoKeys``: the demo's API keys, made on the first run and the same on every later one.

The keys live in one JSON file in the cache folder (``demo-keys.json``, mode 0600,
owner only); the config the demo serves holds only their hashes, like any config.
Concurrency rule: two demos starting at once on one cache agree on one set of keys:
the file is written whole under a temporary name (0600 from its creation) and put in
place with ``os.link``, which fails if the file already exists; the loser reads the
winner's file.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gateway.settings.keys import NewKey, generate_key, parse_key, verify_secret

KEYS_FILE = "demo-keys.json"
KEYS_FORMAT = 1
OWNER_ONLY = 0o600
ROLES = ("admin", "acme", "globex")
"""Who gets a key: the operator (admin API, metrics) and the two demo tenants."""


class DemoKeysError(RuntimeError):
    """The keys file exists but cannot be used (corrupt, or another format)."""


@dataclass(frozen=True)
class DemoKeys:
    """One key per role in ``ROLES``, each with the hash that goes into the config."""

    path: Path
    keys: dict[str, NewKey]

    def key(self, role: str) -> str:
        return self.keys[role].key

    def entry(self, role: str) -> dict[str, str]:
        """The config's ``{id, hash}`` entry for ``role``'s key (no secret in it)."""
        new = self.keys[role]
        return {"id": new.key_id, "hash": new.hash}


def load_or_create_keys(cache_dir: Path) -> DemoKeys:
    """The keys in ``cache_dir/demo-keys.json``, made (and saved 0600) on the first call."""
    path = Path(cache_dir) / KEYS_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        _create(path, {role: generate_key() for role in ROLES})
    return DemoKeys(path=path, keys=_read(path))


def _create(path: Path, keys: dict[str, NewKey]) -> None:
    data = {
        "format": KEYS_FORMAT,
        "note": "loragate demo API keys: secret, keep this file private (mode 0600).",
        "keys": {role: {"key": k.key, "id": k.key_id, "hash": k.hash} for role, k in keys.items()},
    }
    # mkstemp creates the file 0600, so the secret is never readable by others.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another demo was first: theirs wins
            os.link(tmp, path)
    finally:
        os.unlink(tmp)


def _read(path: Path) -> dict[str, NewKey]:
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        os.chmod(path, OWNER_ONLY)  # someone loosened it: secrets stay the owner's
    try:
        data = json.loads(path.read_text())
        if data.get("format") != KEYS_FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {KEYS_FORMAT}")
        keys = {
            role: NewKey(key_id=e["id"], key=e["key"], hash=e["hash"])
            for role, e in data["keys"].items()
        }
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DemoKeysError(
            f"{path} is not a loragate demo keys file ({exc}); delete it to make new keys"
        ) from exc
    for role in ROLES:
        if role not in keys or not _consistent(keys[role]):
            raise DemoKeysError(
                f"{path}: the key of {role!r} is missing or does not match its hash; "
                "delete the file to make new keys"
            )
    return keys


def _consistent(new: NewKey) -> bool:
    parsed = parse_key(new.key)
    return parsed is not None and parsed[0] == new.key_id and verify_secret(parsed[1], new.hash)
