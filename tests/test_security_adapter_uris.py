"""Adapter URIs (issue 11, items 4 and 5): no chained URIs, no ``memory`` by default,
http(s) only to public addresses (redirects included), no credentials in any log line.

A real HTTP server on loopback serves a valid adapter: refused by default, registered
when ``allow_internal_hosts`` says so (the proof that the refusal is the guard's).
"""

from __future__ import annotations

import io
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import adapters.public_hosts
from adapters.base_model import BaseModelSpec
from adapters.errors import InvalidSourceUriError, SourceNotAllowedError
from adapters.limits import AdapterLimits
from adapters.public_hosts import HostGuard, InternalHostRefused, PublicOnlyResolver
from adapters.public_hosts import is_public_address as real_is_public_address
from adapters.registry import AdapterRegistry
from adapters.sources import FsspecSource
from gateway.logging_setup import QUIET_LIBRARIES, configure_logging
from gateway.model_io.prompt_renderer import PromptRenderer
from gateway.settings import RegistrySettings
from tests.conftest import FakeKit, fake_settings, run_fake_gateway
from tests.support.admin_requests import ADMIN, tar_gz_of
from tests.support.modelkit import tiny_llama_dir, write_random_adapter

LIMITS = AdapterLimits(max_lora_rank=16, max_files=6)
HTTP = {"http"}


@dataclass
class AdapterServer:
    """An HTTP server on a loopback address: ``routes`` maps a path to a body (bytes) or
    to a redirect target (str); every request's path is recorded."""

    host: str
    routes: dict[str, bytes | str]
    seen: list[str] = field(default_factory=list)
    port: int = 0

    def url(self, path: str, userinfo: str = "", query: str = "") -> str:
        return f"http://{userinfo}{self.host}:{self.port}{path}{query}"


def _handler(server: AdapterServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, body: bool) -> None:
            path = self.path.split("?", 1)[0]
            server.seen.append(path)
            target = server.routes.get(path)
            if isinstance(target, str):
                self.send_response(302)
                self.send_header("Location", target)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if target is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/gzip")
            self.send_header("Content-Length", str(len(target)))
            self.end_headers()
            if body:
                self.wfile.write(target)

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def log_message(self, *_: object) -> None:
            pass

    return Handler


ServeHttp = Callable[[str, dict[str, bytes | str]], AdapterServer]


@pytest.fixture
def serve_http() -> Iterator[ServeHttp]:
    """``serve_http(host, routes)`` starts an ``AdapterServer``; all stop afterwards."""
    running: list[ThreadingHTTPServer] = []

    def start(host: str, routes: dict[str, bytes | str]) -> AdapterServer:
        server = AdapterServer(host, routes)
        httpd = ThreadingHTTPServer((host, 0), _handler(server))
        server.port = httpd.server_address[1]
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        running.append(httpd)
        return server

    yield start
    for httpd in running:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("served") / "adapter"
    return tar_gz_of(write_random_adapter(tiny_llama_dir(), folder, seed=41))


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[AdapterRegistry]:
    base = BaseModelSpec.from_directory(tiny_llama_dir(), name="tiny-base")
    with AdapterRegistry.open(tmp_path / "data", base, LIMITS) as reg:
        yield reg


def refused_host(registry: AdapterRegistry, source: FsspecSource) -> SourceNotAllowedError:
    with pytest.raises(SourceNotAllowedError) as caught:
        registry.register("remote", source)
    assert (caught.value.status_code, caught.value.code) == (400, "source_host_not_public")
    assert registry.entries() == []
    return caught.value


# -- chained URIs and the default protocols ----------------------------------------------


@pytest.mark.parametrize(
    "uri",
    [
        "https://example.com/a.zip::file:///etc",
        "hf://x::file:///etc",
        "memory://a::file:///etc",
        "simplecache::https://example.com/a.zip",
    ],
)
def test_chained_uris_are_a_typed_400(registry: AdapterRegistry, uri: str) -> None:
    source = FsspecSource(uri, allowed_protocols={"https", "hf", "memory", "simplecache"})
    with pytest.raises(InvalidSourceUriError) as caught:
        registry.register("chained", source)
    assert (caught.value.status_code, caught.value.code, caught.value.param) == (
        400,
        "invalid_source_uri",
        "source",
    )


def test_memory_is_not_a_default_protocol(registry: AdapterRegistry) -> None:
    assert "memory" not in RegistrySettings().allowed_protocols
    with pytest.raises(SourceNotAllowedError):
        registry.register("scratch", FsspecSource("memory://anything/adapter"))


# -- http(s): public addresses only ------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
        ("240.0.0.1", False),
        ("::1", False),
        ("::", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("ff02::1", False),
        ("::ffff:127.0.0.1", False),
        ("2002:7f00:1::", False),  # 6to4 wrapping 127.0.0.1
        ("not-an-address", False),
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
    ],
)
def test_public_addresses(address: str, public: bool) -> None:
    assert real_is_public_address(address) is public


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_loopback_server_that_would_serve_an_adapter_is_refused(
    registry: AdapterRegistry, serve_http: ServeHttp, archive: bytes, host: str
) -> None:
    server = serve_http("127.0.0.1", {"/adapter.tar.gz": archive})
    uri = f"http://{host}:{server.port}/adapter.tar.gz"
    refused_host(registry, FsspecSource(uri, allowed_protocols=HTTP))
    assert server.seen == []  # refused before any connection: no port-scan oracle
    entry = registry.register(
        "remote", FsspecSource(uri, allowed_protocols=HTTP, allow_internal_hosts=True)
    )
    assert entry.ref == "remote@v1" and server.seen  # the server did serve an adapter


async def test_admin_api_refuses_a_loopback_uri(
    fake_kit: FakeKit,
    tmp_path: Path,
    renderer: PromptRenderer,
    serve_http: ServeHttp,
    archive: bytes,
) -> None:
    server = serve_http("127.0.0.1", {"/adapter.tar.gz": archive})
    registry = {"data_dir": tmp_path / "data", "allowed_protocols": ["http", "https"]}
    async with run_fake_gateway(
        fake_settings(fake_kit, tmp_path, registry=registry), renderer
    ) as gw:
        for uri, code in [
            (server.url("/adapter.tar.gz"), "source_host_not_public"),
            (f"{server.url('/adapter.tar.gz')}::file:///etc", "invalid_source_uri"),
        ]:
            r = await gw.client.post(
                "/admin/adapters", json={"name": "remote", "uri": uri}, headers=ADMIN
            )
            assert r.status_code == 400, r.text
            assert r.json()["error"]["code"] == code
    assert server.seen == []


@pytest.fixture
def only_127_0_0_1_is_public(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stand-in for the internet: 127.0.0.1 plays a public server, 127.0.0.2 stays internal."""
    monkeypatch.setattr(
        adapters.public_hosts, "is_public_address", lambda address: address == "127.0.0.1"
    )


@pytest.mark.usefixtures("only_127_0_0_1_is_public")
def test_a_redirect_to_an_internal_address_is_refused(
    registry: AdapterRegistry, serve_http: ServeHttp, archive: bytes
) -> None:
    inside = serve_http("127.0.0.2", {"/adapter.tar.gz": archive})
    public = serve_http("127.0.0.1", {"/adapter.tar.gz": inside.url("/adapter.tar.gz")})
    source = FsspecSource(public.url("/adapter.tar.gz"), allowed_protocols=HTTP)
    refused_host(registry, source)
    assert public.seen and inside.seen == []


@pytest.mark.usefixtures("only_127_0_0_1_is_public")
def test_a_redirect_between_public_addresses_is_followed(
    registry: AdapterRegistry, serve_http: ServeHttp, archive: bytes
) -> None:
    target = serve_http("127.0.0.1", {"/v2.tar.gz": archive})
    public = serve_http("127.0.0.1", {"/adapter.tar.gz": target.url("/v2.tar.gz")})
    entry = registry.register(
        "remote", FsspecSource(public.url("/adapter.tar.gz"), allowed_protocols=HTTP)
    )
    assert entry.ref == "remote@v1" and target.seen


async def test_the_resolver_refuses_names_of_internal_addresses() -> None:
    guard = HostGuard()
    resolver = PublicOnlyResolver(guard)
    try:
        with pytest.raises(InternalHostRefused):
            await resolver.resolve("localhost", 80)
    finally:
        await resolver.close()
    assert guard.refused == ["localhost"]


# -- credentials never reach a log line --------------------------------------------------


@pytest.fixture
def debug_logs() -> Iterator[tuple[io.StringIO, list[logging.LogRecord]]]:
    """``configure_logging("debug")`` writing to a buffer, plus every record the root
    logger's handlers see; the logging set-up is restored afterwards."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in QUIET_LIBRARIES}
    stream = io.StringIO()
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    configure_logging("debug", stream=stream)
    root.addHandler(Collect())
    yield stream, records
    root.handlers[:], root.level = saved
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_debug_logs_never_carry_uri_credentials(
    registry: AdapterRegistry,
    serve_http: ServeHttp,
    archive: bytes,
    debug_logs: tuple[io.StringIO, list[logging.LogRecord]],
) -> None:
    stream, records = debug_logs
    server = serve_http("127.0.0.1", {"/adapter.tar.gz": archive})
    uri = server.url("/adapter.tar.gz", "deploy:pa55-SECRET@", "?token=tok-SECRET&x=1")
    source = FsspecSource(uri, allowed_protocols=HTTP, allow_internal_hosts=True)
    entry = registry.register("remote", source)
    assert entry.source == f"uri:{server.url('/adapter.tar.gz')}"
    # What the HTTP libraries say about such a URL, at each level.
    for name in ("urllib3.connectionpool", "httpx", "fsspec.http", "botocore.endpoint"):
        library = logging.getLogger(name)
        library.debug("Starting new connection: %s", uri)
        library.info("HTTP Request: GET %s", uri)
        library.warning("Retrying after a broken connection: %s", uri)
    logging.getLogger("gateway.test").debug(
        "headers: %s", {"Authorization": "Bearer sk-SECRET-0123456789"}
    )
    written = stream.getvalue()
    seen = written + "\n".join(r.getMessage() for r in records)
    assert "Retrying after a broken connection" in written  # warnings still get through
    assert "headers:" in written  # and loragate's own debug lines
    for secret in ("pa55-SECRET", "tok-SECRET", "sk-SECRET"):
        assert secret not in seen
