"""Serves the playground's static files: the page and a fixed list of assets.

No key is needed to load the page (it holds nothing secret); every API call it makes
carries the key the user typed. A strict Content-Security-Policy keeps the page to
its own scripts and styles and to this origin.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from gateway.errors import NotFoundError

STATIC_DIR = Path(__file__).parent / "static"
PAGE = "index.html"
ASSETS = {
    "playground.css": "text/css; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/playground")
async def playground_page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / PAGE, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


@router.get("/playground/")
async def playground_slash() -> RedirectResponse:
    return RedirectResponse("/playground", status_code=308)


@router.get("/playground/{asset}")
async def playground_asset(asset: str) -> FileResponse:
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise NotFoundError(f"No playground file named {asset!r}.")
    return FileResponse(STATIC_DIR / asset, media_type=media_type, headers=SECURITY_HEADERS)
