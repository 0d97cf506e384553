"""Serves the playground's static files: the page and a fixed list of assets.

Every API call the page makes carries the key the user typed. Serving and the
Content-Security-Policy are those of every page the gateway ships
(``gateway.api.static_page``); the playground also shows ``data:`` images.
"""

from __future__ import annotations

from pathlib import Path

from gateway.api.static_page import CSS, JAVASCRIPT, SVG, security_headers, static_page_router

STATIC_DIR = Path(__file__).parent / "static"
ASSETS = {
    "playground.css": CSS,
    "playground.js": JAVASCRIPT,
    "favicon.svg": SVG,
}
SECURITY_HEADERS = security_headers(img_src="'self' data:")

router = static_page_router("playground", STATIC_DIR, ASSETS, SECURITY_HEADERS)
