"""Serves the console's static files: the page and a fixed list of assets.

Every API call the page makes carries the admin key the operator typed, which the page
keeps in this tab's ``sessionStorage`` only. Serving and the Content-Security-Policy are
those of every page the gateway ships (``gateway.api.static_page``).
"""

from __future__ import annotations

from pathlib import Path

from gateway.api.static_page import (
    CSS,
    JAVASCRIPT,
    PAGE,
    SVG,
    security_headers,
    static_page_router,
)

STATIC_DIR = Path(__file__).parent / "static"
ASSETS = {
    "console.css": CSS,
    "favicon.svg": SVG,
    # console.js is the page's one script; it imports the others (ES modules).
    "console.js": JAVASCRIPT,
    "audit.js": JAVASCRIPT,
    "elements.js": JAVASCRIPT,
    "inventory.js": JAVASCRIPT,
    "session.js": JAVASCRIPT,
    "spend.js": JAVASCRIPT,
}
SECURITY_HEADERS = security_headers()

__all__ = ["ASSETS", "PAGE", "SECURITY_HEADERS", "STATIC_DIR", "router"]

router = static_page_router("console", STATIC_DIR, ASSETS, SECURITY_HEADERS)
