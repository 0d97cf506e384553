"""API keys: generated once, stored only as salted hashes, checked in constant time.

A key reads ``lg-<key_id>-<secret>``. The key id (public, safe to log) finds the
stored record; the secret is checked against ``sha256(salt || secret)`` with
``hmac.compare_digest``. Secrets are 256-bit random, so a fast hash is enough (no
password stretching: it would cost every request milliseconds for no gain).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PATTERN = re.compile(r"^lg-([a-z0-9]{8,32})-([A-Za-z0-9_-]{20,128})$")
HASH_PATTERN = re.compile(r"^sha256\$([0-9a-f]{32})\$([0-9a-f]{64})$")


@dataclass(frozen=True)
class NewKey:
    key_id: str
    key: str
    """The full key: shown once, never stored."""
    hash: str
    """What the config stores: ``sha256$<salt>$<digest>``."""


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.sha256(salt + secret.encode()).hexdigest()
    return f"sha256${salt.hex()}${digest}"


def generate_key() -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id=key_id, key=f"lg-{key_id}-{secret}", hash=hash_secret(secret))


def parse_key(presented: str) -> tuple[str, str] | None:
    """``(key_id, secret)`` of a well-formed key, else None."""
    match = KEY_PATTERN.match(presented)
    return (match.group(1), match.group(2)) if match else None


def verify_secret(secret: str, stored_hash: str) -> bool:
    match = HASH_PATTERN.match(stored_hash)
    if match is None:
        return False
    salt = bytes.fromhex(match.group(1))
    expected = match.group(2)
    actual = hashlib.sha256(salt + secret.encode()).hexdigest()
    return hmac.compare_digest(actual, expected)


def valid_hash(stored_hash: str) -> bool:
    return HASH_PATTERN.match(stored_hash) is not None
