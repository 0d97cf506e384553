"""A real S3-compatible server on loopback (moto's server mode), once per test session.

moto's WSGI application (the one ``moto_server`` serves) runs in a child process behind
werkzeug's threaded server on a free loopback port, wrapped so that every request is
recorded: tests count what the gateway really asked of the store (``S3Server.reads``,
read back from the child at ``CALLS_PATH``). A child process, because importing flask and
werkzeug into the test process puts werkzeug's context proxies into ``sys.modules``, and
vLLM's in-process engine walks every module's globals at start-up and trips over them.
Clients reach it with boto3 or fsspec like any S3 endpoint; credentials are any strings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

ACCESS_KEY_ENV = "LORAGATE_TEST_S3_KEY"
SECRET_KEY_ENV = "LORAGATE_TEST_S3_SECRET"
BUCKET = "adapters"
CALLS_PATH = "/__loragate_test_calls__"


@dataclass(frozen=True)
class S3Call:
    method: str
    path: str
    query: dict[str, list[str]]

    @property
    def prefix(self) -> str:
        """The ``prefix`` of a ListObjects call ('' otherwise)."""
        return self.query.get("prefix", [""])[0]


@dataclass
class S3Server:
    endpoint: str

    def calls(self) -> list[S3Call]:
        """Every request the server has answered so far, in order."""
        with urllib.request.urlopen(self.endpoint + CALLS_PATH, timeout=10) as answer:
            return [S3Call(c["method"], c["path"], c["query"]) for c in json.load(answer)]

    def reads(self, under: str) -> list[S3Call]:
        """Lists and gets that touched keys under ``under`` (``prefix/name/``)."""
        calls = self.calls()
        path = f"/{BUCKET}/{under}"
        return [
            c
            for c in calls
            if c.method in ("GET", "HEAD")
            and (c.path.startswith(path) or c.prefix.startswith(under))
        ]

    def client(self) -> Any:
        import boto3

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )

    def put_folder(self, folder: Path, key_prefix: str, names: Iterable[str] | None = None) -> None:
        """Upload the files of ``folder`` under ``key_prefix`` (e.g. ``acme/support/``)."""
        client = self.client()
        for path in sorted(folder.iterdir()):
            if names is None or path.name in names:
                client.put_object(
                    Bucket=BUCKET, Key=f"{key_prefix}{path.name}", Body=path.read_bytes()
                )


def _counting(app: Callable[..., Any]) -> Callable[..., Any]:
    calls: list[dict[str, Any]] = []

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == CALLS_PATH:
            body = json.dumps(list(calls)).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        calls.append(
            {
                "method": environ["REQUEST_METHOD"],
                "path": path,
                "query": parse_qs(environ.get("QUERY_STRING", "")),
            }
        )
        return app(environ, start_response)

    return wrapped


def _serve(port_file: str) -> None:
    """The child: moto's S3 behind the counting wrapper; the port goes to ``port_file``."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    http = make_server(
        "127.0.0.1", 0, _counting(DomainDispatcherApplication(create_backend_app)), threaded=True
    )
    Path(port_file + ".tmp").write_text(str(http.server_port))
    os.replace(port_file + ".tmp", port_file)
    http.serve_forever()


def _wait_for_port(child: subprocess.Popen[bytes], port_file: Path) -> int:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if port_file.exists():
            return int(port_file.read_text())
        if child.poll() is not None:
            raise RuntimeError(f"the moto S3 server exited with {child.returncode}")
        time.sleep(0.05)
    raise RuntimeError("the moto S3 server did not start within 60 s")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 on 127.0.0.1 with the bucket ``adapters``; the credentials' variable
    names ``ACCESS_KEY_ENV`` / ``SECRET_KEY_ENV`` are set for the gateway to read."""
    with tempfile.TemporaryDirectory(prefix="loragate-s3-") as scratch:
        port_file = Path(scratch) / "port"
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.support.s3_server", str(port_file)],
            cwd=Path(__file__).resolve().parents[2],
        )
        try:
            server = S3Server(endpoint=f"http://127.0.0.1:{_wait_for_port(child, port_file)}")
            os.environ.setdefault(ACCESS_KEY_ENV, "test-access-key")
            os.environ.setdefault(SECRET_KEY_ENV, "test-secret-key")
            server.client().create_bucket(Bucket=BUCKET)
            yield server
        finally:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


if __name__ == "__main__":
    _serve(sys.argv[1])
