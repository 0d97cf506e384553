"""How long a key revoked on one gateway is still served by another on the same
PostgreSQL: two gateway apps (fake engine, in one process), a throw-away PostgreSQL
(Debian's binaries, as the tests start it), the store pre-filled with N other keys.

    python -m loadtests.bench_revocation [--keys 0 20000] [--rounds 10]

Each round makes a key on gateway A, waits until B serves it, revokes it on A and
polls B every 10 ms until it answers 401; both times count from the revocation
request. The bound is ``shared_store.refresh_seconds``
(0.5 s) plus one store read; it should not grow with N (revocations are applied before
the directory rebuild, which does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings.keys import hash_secret
from loadtests.bench_key_lookup import cpu_name
from tests.conftest import FakeKit
from tests.support.modelkit import smollm2_tokenizer_dir, tiny_llama_dir, write_random_adapter
from tests.support.postgres_fixtures import PostgresServer
from tests.support.tenant_admin_support import ADMIN, Gateway, two_gateways


def prefill(url: str, count: int) -> None:
    """``count`` keys of tenant ``acme`` straight into the store's table."""
    import psycopg

    from gateway.tenancy.pg_tenant_store import PostgresTenantStore

    PostgresTenantStore(url).close()  # creates the tables
    filler = hash_secret("filler", bytes(16))
    rows = [(f"{n:012x}", "acme", "k", filler, 0) for n in range(count)]
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO loragate_api_keys (id, tenant, name, hash, created_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            rows,
        )


async def until(gw: Gateway, key: str, status: int, limit_s: float = 60.0) -> None:
    """Poll ``gw`` with ``key`` every 10 ms until it answers ``status``."""
    for _ in range(int(limit_s / 0.01)):
        if (await gw.chat(key)).status_code == status:
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"no {status} within {limit_s} s")


async def rounds(kit: FakeKit, url: str, folder: Path, count: int) -> list[tuple[float, float]]:
    """(A's answer to the revocation, B's first 401), in seconds from the request."""
    renderer = PromptRenderer.from_model_dir(smollm2_tokenizer_dir())
    await asyncio.to_thread(folder.mkdir, parents=True)
    seconds = []
    async with two_gateways(kit, url, folder, renderer) as (a, b):
        for _ in range(count):
            made = await a.new_key("acme", name="bench")
            await until(b, made["key"], 200)
            start = time.monotonic()
            r = await a.client.delete(f"/admin/tenants/acme/keys/{made['id']}", headers=ADMIN)
            assert r.status_code == 200
            answered = time.monotonic() - start
            await until(b, made["key"], 401)
            seconds.append((answered, time.monotonic() - start))
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, nargs="+", default=[0, 20000])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    print(f"# CPU: {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()}")
    root = Path(tempfile.mkdtemp(prefix="bench-revocation-"))
    pg_root = Path(tempfile.mkdtemp(prefix="bench-revocation-pg-"))  # handed to postgres
    try:
        server = PostgresServer(pg_root)
        server.start()
        base = tiny_llama_dir()
        adapters = {
            name: write_random_adapter(base, root / "adapters" / name, seed=seed)
            for seed, name in enumerate(("pirate", "robot"), start=1)
        }
        kit = FakeKit(base, root / "adapters", adapters)
        rows = [["other keys", "rounds", "A answers p50 s", "B refuses p50 s", "B refuses max s"]]
        try:
            for count in args.keys:
                url = server.create_schema()
                prefill(url, count)
                took = asyncio.run(rounds(kit, url, root / f"gw-{count}", args.rounds))
                answers, refusals = [t[0] for t in took], [t[1] for t in took]
                rows.append(
                    [
                        str(count),
                        str(len(took)),
                        f"{statistics.median(answers):.3f}",
                        f"{statistics.median(refusals):.3f}",
                        f"{max(refusals):.3f}",
                    ]
                )
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(pg_root, ignore_errors=True)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)))
    print(f"# load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
