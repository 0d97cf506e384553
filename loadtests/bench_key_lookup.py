"""Key lookup with many admin API keys: per-request authentication, what one admin
change costs (re-reading the SQLite store and rebuilding the directory), and what a
revocation costs before that (the store's list of keys revoked since a generation).

    python -m loadtests.bench_key_lookup [--keys 100 1000 10000 100000]

Every figure of one run comes from the same process, side by side: authentication with
a config file key and with an admin API key in the same directory, so the ratio is
what to read (timings on a shared machine are noisy). Authentication is a dict lookup
plus one SHA-256; the rebuild is linear in the number of keys.
"""

from __future__ import annotations

import argparse
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gateway.settings.keys import generate_key, hash_secret
from gateway.settings.tenancy import TenancyConfig
from gateway.tenancy.directory import TenantDirectory
from gateway.tenancy.managed import KeyUses, ManagedKey
from gateway.tenancy.sqlite_tenant_store import SqliteTenantStore


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor()
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def per_call_us(fn: Callable[[], object], calls: int, rounds: int = 5) -> float:
    """Median over ``rounds`` of the mean time per call, in microseconds."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def fill(path: Path, count: int) -> str:
    """``count`` keys of tenant ``acme`` in the store at ``path``; returns one key in
    clear. The filler rows go in as one insert (the store's own path, one transaction
    per key, is the admin API's, not what is measured here)."""
    store = SqliteTenantStore(path)
    probe = generate_key()
    try:
        store.create_key(ManagedKey(probe.key_id, "acme", "probe", probe.hash, 0), "bench")
    finally:
        store.close()
    filler_hash = hash_secret("filler", bytes(16))  # the filler keys' hash is not timed
    rows = [(f"{n:012x}", "acme", "k", filler_hash, 0) for n in range(count - 1)]
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO loragate_api_keys (id, tenant, name, hash, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            rows,
        )
    return probe.key


def bench(count: int, folder: Path, calls: int) -> list[str]:
    file_key = generate_key()
    file = TenancyConfig.model_validate(
        {"tenants": {"acme": {"keys": [{"id": file_key.key_id, "hash": file_key.hash}]}}}
    )
    path = folder / f"tenants-{count}.db"
    api_key = fill(path, count)
    store = SqliteTenantStore(path)
    try:
        start = time.perf_counter()
        snapshot = store.snapshot()
        read_ms = (time.perf_counter() - start) * 1e3
    finally:
        store.close()
    start = time.perf_counter()
    directory = TenantDirectory(file, snapshot, KeyUses())
    build_ms = (time.perf_counter() - start) * 1e3
    file_us = per_call_us(lambda: directory.authenticate(f"Bearer {file_key.key}"), calls)
    api_us = per_call_us(lambda: directory.authenticate(f"Bearer {api_key}"), calls)
    store = SqliteTenantStore(path)
    try:
        seen = store.generation()
        store.revoke_key("acme", api_key.split("-")[1], "bench")
        start = time.perf_counter()
        revoked = store.revoked_since(seen)
        revoked_ms = (time.perf_counter() - start) * 1e3
        assert len(revoked) == 1
    finally:
        store.close()
    return [
        str(count),
        f"{read_ms:.1f}",
        f"{build_ms:.1f}",
        f"{file_us:.2f}",
        f"{api_us:.2f}",
        f"{api_us / file_us:.2f}",
        f"{revoked_ms:.2f}",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[100, 1000, 10000, 100000])
    parser.add_argument("--calls", type=int, default=20000, help="authentications per round")
    args = parser.parse_args(argv)
    print(f"# CPU: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()}")
    rows = [
        [
            "api keys",
            "store read ms",
            "directory build ms",
            "auth file key us",
            "auth api key us",
            "api/file",
            "revocation read ms",
        ]
    ]
    with tempfile.TemporaryDirectory(prefix="bench-keys-") as tmp:
        for count in args.keys:
            rows.append(bench(count, Path(tmp), args.calls))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"# load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
