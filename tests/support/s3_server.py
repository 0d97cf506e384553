"""A real S3-compatible server on loopback (moto's server mode), once per test session.

moto's WSGI application (the one ``moto_server`` and ``ThreadedMotoServer`` serve) runs
behind werkzeug's threaded server on a free loopback port, wrapped so that every request
is recorded: tests count what the gateway really asked of the store (``S3Server.reads``).
Clients reach it with boto3 or fsspec like any S3 endpoint; credentials are any strings.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

ACCESS_KEY_ENV = "LORAGATE_TEST_S3_KEY"
SECRET_KEY_ENV = "LORAGATE_TEST_S3_SECRET"
BUCKET = "adapters"


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
    calls: list[S3Call] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, call: S3Call) -> None:
        with self._lock:
            self.calls.append(call)

    def reads(self, under: str) -> list[S3Call]:
        """Lists and gets that touched keys under ``under`` (``prefix/name/``)."""
        with self._lock:
            calls = list(self.calls)
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


def _counting(app: Callable[..., Any], server: S3Server) -> Callable[..., Any]:
    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        server.record(
            S3Call(
                environ["REQUEST_METHOD"],
                environ.get("PATH_INFO", ""),
                parse_qs(environ.get("QUERY_STRING", "")),
            )
        )
        return app(environ, start_response)

    return wrapped


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 on 127.0.0.1 with the bucket ``adapters``; the credentials' variable
    names ``ACCESS_KEY_ENV`` / ``SECRET_KEY_ENV`` are set for the gateway to read."""
    import os

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    app = DomainDispatcherApplication(create_backend_app)
    http = make_server("127.0.0.1", 0, app, threaded=True)
    server = S3Server(endpoint=f"http://127.0.0.1:{http.server_port}")
    http.app = _counting(app, server)
    thread = threading.Thread(target=http.serve_forever, name="moto-s3", daemon=True)
    thread.start()
    os.environ.setdefault(ACCESS_KEY_ENV, "test-access-key")
    os.environ.setdefault(SECRET_KEY_ENV, "test-secret-key")
    server.client().create_bucket(Bucket=BUCKET)
    try:
        yield server
    finally:
        http.shutdown()
        thread.join(timeout=10)
