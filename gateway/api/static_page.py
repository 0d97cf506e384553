"""A browser page the gateway ships: the page at ``/{name}``, a fixed list of its files at
``/{name}/{file}``, every answer under one strict Content-Security-Policy.

The page holds nothing secret, so loading it needs no key; every API call it makes
carries the key the user typed. The policy keeps it to its own scripts and styles and to
this origin: no inline script, no third-party asset, no frames. Only the files named in
``assets`` are served (anything else is the usual 404), each with its own media type.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from gateway.errors import NotFoundError

PAGE = "index.html"
JAVASCRIPT = "text/javascript; charset=utf-8"
CSS = "text/css; charset=utf-8"
SVG = "image/svg+xml"


def security_headers(img_src: str = "'self'") -> dict[str, str]:
    """The headers of every file of a page; ``img_src`` widens the image sources only."""
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'self'; style-src 'self'; img-src {img_src}; "
            "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def static_page_router(
    name: str, static_dir: Path, assets: Mapping[str, str], headers: Mapping[str, str]
) -> APIRouter:
    """Routes for ``/{name}`` (the page), ``/{name}/`` (redirect) and ``/{name}/{asset}``."""
    router = APIRouter(include_in_schema=False)
    path = f"/{name}"
    page_headers = dict(headers)

    @router.get(path)
    async def page() -> FileResponse:
        return FileResponse(
            static_dir / PAGE, media_type="text/html; charset=utf-8", headers=page_headers
        )

    @router.get(f"{path}/")
    async def slash() -> RedirectResponse:
        return RedirectResponse(path, status_code=308)

    @router.get(f"{path}/{{asset}}")
    async def asset(asset: str) -> FileResponse:
        media_type = assets.get(asset)
        if media_type is None:
            raise NotFoundError(f"No {name} file named {asset!r}.")
        return FileResponse(static_dir / asset, media_type=media_type, headers=page_headers)

    return router
