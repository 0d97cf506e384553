"""A real PostgreSQL (Debian's binaries) for the session, and a fresh database per test.

The server runs in a temporary folder on a free loopback port. ``fsync`` is off to
keep tests fast on a shared 2-core box: the tests stop it cleanly (fast shutdown), so
nothing committed is lost; what they check is the gateway's own bookkeeping
(idempotent retries, nothing dropped while the server is away), not PostgreSQL's.
``initdb`` and ``postgres`` refuse to run as root, so as root they run as the
``postgres`` user (``runuser``) on a folder handed to it. Without the binaries every
test that asks for ``pg_url`` is skipped.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_BIN_DIRS = [Path(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find(binary: str) -> Path | None:
    for folder in PG_BIN_DIRS:
        if (folder / binary).is_file():
            return folder / binary
    found = shutil.which(binary)
    return Path(found) if found else None


class PostgresServer:
    """One throw-away cluster; ``stop()``/``start()`` let a test take it away and back."""

    def __init__(self, root: Path) -> None:
        initdb, postgres = _find("initdb"), _find("postgres")
        if initdb is None or postgres is None:
            pytest.skip("PostgreSQL binaries not found (Debian: apt-get install postgresql)")
        self._postgres = postgres
        self.root = root
        self.data = root / "data"
        self.port = _free_port()
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres", "postgres")
        self._proc: subprocess.Popen[bytes] | None = None
        subprocess.run(
            [*self._as_user, str(initdb), "-D", str(self.data), "-U", "postgres",
             "--auth=trust", "-E", "UTF8", "--no-instructions", "--no-sync"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        log = (self.root / "postgres.log").open("ab")
        self._proc = subprocess.Popen(
            [*self._as_user, str(self._postgres), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
             "-c", "max_connections=60", "-c", "shared_buffers=16MB", "-c", "fsync=off"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        log.close()
        import psycopg

        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.url(), connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    text = (self.root / "postgres.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"postgres did not start: {text}")
                time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): clients are cut off, committed data stays."""
        if self._proc is None:
            return
        # Signal the postmaster itself: ``runuser`` does not pass SIGINT on.
        pid_file = self.data / "postmaster.pid"
        try:
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
        except (OSError, ValueError, IndexError):
            self._proc.send_signal(signal.SIGINT)
        self._proc.wait(timeout=30)
        self._proc = None

    def create_schema(self) -> str:
        """A new, empty schema; the URL returned makes it the connection's search path."""
        import psycopg

        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return f"{self.url()}?options=-csearch_path%3D{name}"


def write_url(folder: Path, url: str) -> Path:
    """The URL in a new file under ``folder``, as a mounted secret holds it (``url_file``)."""
    folder.mkdir()
    path = folder / "pg-url"
    path.write_text(url)
    return path


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg")
    # Not under pytest's tmp folder: that one is private to root (0700), and the
    # server runs as ``postgres``.
    root = Path(tempfile.mkdtemp(prefix="loragate-pg-"))
    try:
        server = PostgresServer(root)
        server.start()
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> str:
    """A fresh, empty schema of the session's server (a schema, not a database: creating
    a database takes about a second here): tests stay independent."""
    return pg_server.create_schema()
