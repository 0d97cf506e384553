"""The server under test: loopback-only URLs, and a server process the runner owns.

A :class:`ServerProcess` runs in its own process group, so stopping it also stops the
engine processes it spawned (vLLM starts its engine core in a child process), and
nothing else. Every wait is bounded by a deadline.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

import httpx

LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain"})


class TargetError(RuntimeError):
    """The server under test is not allowed, did not start, or did not become ready."""


def require_loopback(url: str) -> str:
    """``url`` without a trailing slash, if it is http(s) on a loopback host; else raise."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise TargetError(f"not an http(s) URL: {url!r}")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() in LOOPBACK_NAMES
    if not loopback:
        raise TargetError(f"load tests only target loopback servers, not {host!r}")
    return url.rstrip("/")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(
    url: str,
    *,
    timeout_s: float,
    alive: subprocess.Popen[bytes] | None = None,
    interval_s: float = 1.0,
) -> None:
    """Poll ``GET url`` until it answers 200, the process ``alive`` exits, or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if alive is not None and alive.poll() is not None:
            raise TargetError(f"the server exited with code {alive.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval_s)
    raise TargetError(f"{url} was not ready within {timeout_s:.0f} s")


def served_models(url: str, api_key: str | None = None) -> set[str] | None:
    """Model ids the server lists at ``GET /v1/models``, or None if it does not say."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        response = httpx.get(url + "/v1/models", headers=headers, timeout=10)
        data = response.json()["data"] if response.status_code == 200 else None
        return {str(item["id"]) for item in data} if isinstance(data, list) else None
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return None


class ServerProcess:
    """A server command started for one load test and stopped after it (a context manager).

    ``command`` may hold ``{port}``; output goes to ``log_path``.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        port: int,
        ready_path: str,
        log_path: Path,
        ready_timeout_s: float,
        stop_timeout_s: float = 30.0,
    ) -> None:
        self.command = [part.replace("{port}", str(port)) for part in command]
        self.base_url = f"http://127.0.0.1:{port}"
        self.ready_url = self.base_url + "/" + ready_path.lstrip("/")
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        """The server's process while it runs (its pid, for memory and CPU samples)."""
        return self._process

    def start(self) -> str:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                self.command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            wait_ready(self.ready_url, timeout_s=self.ready_timeout_s, alive=self._process)
        except TargetError as exc:
            self.stop()
            where = f"command: {shlex.join(self.command)}\nlog: {self.log_path}, ending:\n"
            raise TargetError(f"{exc}\n{where}{self._log_tail()}") from exc
        return self.base_url

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])

    def stop(self) -> None:
        """SIGINT (graceful), then SIGTERM, then SIGKILL, to this server's process group."""
        process, self._process = self._process, None
        if process is None:
            return
        for sig, grace in (
            (signal.SIGINT, self.stop_timeout_s),
            (signal.SIGTERM, 10.0),
            (signal.SIGKILL, 5.0),
        ):
            if not _signal_group(process.pid, sig):
                return
            if _group_gone(process, grace):
                return

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    return True


def _group_gone(process: subprocess.Popen[bytes], timeout_s: float) -> bool:
    """Wait until the leader is reaped and no process of its group is left."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None and not _signal_group(process.pid, 0):
            return True
        time.sleep(0.2)
    return False
