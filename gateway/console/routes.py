"""Serves the console's static files: the page and a fixed list of assets.

No key is needed to load the page (it holds nothing secret); every API call it makes
carries the admin key the operator typed, which the page keeps in this tab's
``sessionStorage`` only. The Content-Security-Policy keeps the page to its own script
and stylesheet and to this origin: no inline script, no third-party asset, no frames.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from gateway.errors import NotFoundError

STATIC_DIR = Path(__file__).parent / "static"
PAGE = "index.html"
JAVASCRIPT = "text/javascript; charset=utf-8"
ASSETS = {
    "console.css": "text/css; charset=utf-8",
    "favicon.svg": "image/svg+xml",
    # console.js is the page's one script; it imports the others (ES modules).
    "console.js": JAVASCRIPT,
    "audit.js": JAVASCRIPT,
    "elements.js": JAVASCRIPT,
    "inventory.js": JAVASCRIPT,
    "session.js": JAVASCRIPT,
    "spend.js": JAVASCRIPT,
}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/console")
async def console_page() -> FileResponse:
    return FileResponse(
        STATIC_DIR / PAGE, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS
    )


@router.get("/console/")
async def console_slash() -> RedirectResponse:
    return RedirectResponse("/console", status_code=308)


@router.get("/console/{asset}")
async def console_asset(asset: str) -> FileResponse:
    media_type = ASSETS.get(asset)
    if media_type is None:
        raise NotFoundError(f"No console file named {asset!r}.")
    return FileResponse(STATIC_DIR / asset, media_type=media_type, headers=SECURITY_HEADERS)
