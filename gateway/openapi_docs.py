"""``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``, as ``server.docs`` allows.

The API description names every route, the admin API's included, so it is not served
by default:

* ``off`` (default): none of these routes exist (404, like any unknown URL);
* ``admin``: each needs the admin key (``Authorization: Bearer <key>``, as the admin
  API; a browser needs a proxy or extension that adds the header);
* ``open``: served to anyone who can reach the gateway.

The pages load their scripts and styles from this server, never from a CDN: the files
come from the ``fastapi-offline`` package (Swagger UI and ReDoc builds). Without it
installed, only ``/openapi.json`` is served.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.routing import BaseRoute

from gateway.api.deps import require_admin
from gateway.errors import NotFoundError

logger = logging.getLogger(__name__)

DocsMode = Literal["off", "admin", "open"]

OPENAPI_URL = "/openapi.json"
ASSETS_URL = "/docs/assets"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# Swagger UI asks an online validator for a badge unless told not to.
SWAGGER_PARAMETERS = {"validatorUrl": None}


def assets_dir() -> Path | None:
    """The Swagger UI and ReDoc files shipped by ``fastapi-offline``, if installed."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or spec.origin is None:
        return None
    folder = Path(spec.origin).parent / "static"
    return folder if all((folder / name).is_file() for name in ASSETS) else None


def docs_app_arguments(mode: DocsMode, title: str) -> dict[str, Any]:
    """``FastAPI(...)`` keyword arguments: FastAPI's own (CDN) docs routes off, and
    this module's routes as ``mode`` allows."""
    return {
        "docs_url": None,
        "redoc_url": None,
        "openapi_url": None,
        "routes": docs_routes(mode, title, assets_dir()),
    }


def docs_routes(mode: DocsMode, title: str, assets: Path | None) -> list[BaseRoute]:
    if mode == "off":
        return []
    dependencies = [Depends(require_admin)] if mode == "admin" else []
    router = APIRouter(include_in_schema=False, dependencies=dependencies)

    @router.get(OPENAPI_URL)
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(request.app.openapi(), headers=SECURITY_HEADERS)

    if assets is None:
        logger.warning("fastapi-offline is not installed: /docs and /redoc are not served")
        return list(router.routes)

    @router.get("/docs")
    async def swagger_ui() -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url=OPENAPI_URL,
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS,
        )
        page.headers.update(SECURITY_HEADERS)
        return page

    @router.get("/redoc")
    async def redoc() -> HTMLResponse:
        page = get_redoc_html(
            openapi_url=OPENAPI_URL,
            title=f"{title} - ReDoc",
            redoc_js_url=f"{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_URL}/favicon.png",
            with_google_fonts=False,
        )
        page.headers.update(SECURITY_HEADERS)
        return page

    @router.get(ASSETS_URL + "/{name}")
    async def asset(name: str) -> FileResponse:
        media_type = ASSETS.get(name)  # a fixed list: no path from the URL reaches the disk
        if media_type is None:
            raise NotFoundError(f"No docs asset named {name!r}.")
        return FileResponse(assets / name, media_type=media_type, headers=SECURITY_HEADERS)

    return list(router.routes)
