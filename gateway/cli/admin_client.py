"""``AdminClient``: the admin API of a running gateway, over HTTP (``/admin/adapters``
here; ``gateway.cli.tenants`` calls ``/admin/tenants`` through ``request``)."""

from __future__ import annotations

import os
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "LORAGATE_URL"
KEY_ENVS = ("LORAGATE_ADMIN_KEY", "LORAGATE_ADMIN__API_KEY")
PREFIX = "/admin/adapters"


class AdminAPIError(Exception):
    """The gateway answered with an error body (or could not be reached: ``status`` 0)."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    def __str__(self) -> str:
        code = f" ({self.code})" if self.code else ""
        return f"HTTP {self.status}{code}: {self.message}" if self.status else self.message


def default_url() -> str:
    return os.environ.get(URL_ENV, DEFAULT_URL)


def default_admin_key() -> str | None:
    return next((os.environ[k] for k in KEY_ENVS if os.environ.get(k)), None)


@contextmanager
def packed_folder(folder: Path) -> Iterator[Path]:
    """A temporary ``.tar.gz`` of the files directly inside ``folder``."""
    with tempfile.TemporaryDirectory(prefix="loragate-upload-") as tmp:
        archive = Path(tmp) / f"{folder.name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for file in sorted(folder.iterdir()):
                if file.is_file() and not file.is_symlink():
                    tar.add(file, arcname=file.name)
        yield archive


class AdminClient:
    """Async client; every method returns the response's JSON or raises ``AdminAPIError``."""

    def __init__(
        self,
        base_url: str,
        admin_key: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 600.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {admin_key}"} if admin_key else {}
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"), headers=headers, transport=transport, timeout=timeout
        )

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return await self.request(method, PREFIX + path, **kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Any admin route (``path`` from the root, e.g. ``/admin/tenants``)."""
        try:
            response = await self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AdminAPIError(
                0, f"cannot reach the gateway at {self._http.base_url}: {exc}"
            ) from exc
        if response.is_success:
            return response.json()
        try:
            error = response.json()["error"]
            raise AdminAPIError(response.status_code, error["message"], error.get("code"))
        except (ValueError, KeyError, TypeError):
            raise AdminAPIError(response.status_code, response.text[:500]) from None

    async def list(self) -> Any:
        return await self._call("GET", "")

    async def show(self, name: str) -> Any:
        return await self._call("GET", f"/{name}")

    async def register(
        self,
        name: str,
        *,
        path: str | None = None,
        uri: str | None = None,
        version: str | None = None,
        activate: bool | None = None,
    ) -> Any:
        """Register from a path on the gateway's machine or an fsspec URI."""
        body = {"name": name, "path": path, "uri": uri, "version": version, "activate": activate}
        return await self._call("POST", "", json={k: v for k, v in body.items() if v is not None})

    async def upload(
        self,
        name: str,
        archive: Path,
        *,
        version: str | None = None,
        activate: bool | None = None,
    ) -> Any:
        """Register from a local ``.zip`` / ``.tar.gz`` archive, uploaded."""
        fields = {"name": name}
        if version is not None:
            fields["version"] = version
        if activate is not None:
            fields["activate"] = "true" if activate else "false"
        with archive.open("rb") as fh:
            files = {"file": (archive.name, fh, "application/octet-stream")}
            return await self._call("POST", "", data=fields, files=files)

    async def activate(self, name: str, version: str) -> Any:
        return await self._call("POST", f"/{name}/activate", json={"version": version})

    async def retire(self, name: str, version: str | None = None) -> Any:
        params = {"version": version} if version else None
        return await self._call("DELETE", f"/{name}", params=params)

    async def _versioned(self, action: str, name: str, version: str | None) -> Any:
        body = {"version": version} if version else None
        return await self._call("POST", f"/{name}/{action}", json=body)

    async def pin(self, name: str, version: str | None = None) -> Any:
        return await self._versioned("pin", name, version)

    async def unpin(self, name: str, version: str | None = None) -> Any:
        return await self._versioned("unpin", name, version)

    async def prewarm(self, name: str, version: str | None = None) -> Any:
        return await self._versioned("prewarm", name, version)

    async def split(
        self,
        name: str,
        weights: dict[str, int],
        *,
        shadow: dict[str, Any] | None = None,
        rollback: dict[str, float] | None = None,
    ) -> Any:
        body: dict[str, Any] = {"weights": weights}
        if shadow is not None:
            body["shadow"] = shadow
        if rollback is not None:
            body["rollback"] = rollback
        return await self._call("PUT", f"/{name}/split", json=body)

    async def shadow_log(
        self, name: str, *, tenant: str | None = None, after: int = 0, limit: int = 20
    ) -> Any:
        params: dict[str, Any] = {"after": after, "limit": limit}
        if tenant is not None:
            params["tenant"] = tenant
        return await self._call("GET", f"/{name}/shadow", params=params)

    async def clear_split(self, name: str) -> Any:
        return await self._call("DELETE", f"/{name}/split")
