"""Swagger UI at /docs and ReDoc at /redoc from local assets, so both render without internet.

FastAPI's own docs pages load their JavaScript from a CDN and are blank offline. The assets here
come from the `fastapi-offline` package, which bundles Swagger UI 5 and ReDoc 2 (both render the
OpenAPI 3.1 document FastAPI writes; the `swagger-ui-bundle` package ships Swagger UI 4, which
cannot). The app is created with ``docs_url=None, redoc_url=None`` and includes this router.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import FileResponse, HTMLResponse

router = APIRouter(include_in_schema=False)

STATIC_PREFIX = "/docs/static"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"

# name -> media type: only these files are served, so no path from a client reaches the disk.
ASSETS: dict[str, str] = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "redoc.standalone.js": "text/javascript; charset=utf-8",
    "favicon.png": "image/png",
}


def asset_dir() -> Path:
    """Where the bundled Swagger UI and ReDoc files are (inside the fastapi-offline package)."""
    return Path(str(files("fastapi_offline") / "static"))


def _openapi_url(request: Request) -> str:
    return request.scope.get("root_path", "") + (request.app.openapi_url or "/openapi.json")


@router.get("/docs", response_class=HTMLResponse)
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over this API's OpenAPI document, every asset served by this server."""
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - Swagger UI",
        swagger_js_url=f"{STATIC_PREFIX}/swagger-ui-bundle.js",
        swagger_css_url=f"{STATIC_PREFIX}/swagger-ui.css",
        swagger_favicon_url=f"{STATIC_PREFIX}/favicon.png",
        oauth2_redirect_url=OAUTH2_REDIRECT_URL,
    )


@router.get(OAUTH2_REDIRECT_URL, response_class=HTMLResponse)
def swagger_ui_redirect() -> HTMLResponse:
    """The page Swagger UI's OAuth2 flow returns to (kept for parity with FastAPI's default)."""
    return get_swagger_ui_oauth2_redirect_html()


# ReDoc's menu shows the Redocly logo from its CDN; this policy keeps the page on this server
# (the logo is not fetched, its alt text shows), so it renders the same with or without internet.
REDOC_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; worker-src 'self' blob:; font-src 'self' data:"
)


@router.get("/redoc", response_class=HTMLResponse)
def redoc(request: Request) -> HTMLResponse:
    """ReDoc over this API's OpenAPI document, without Google Fonts or a CDN."""
    page = get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=f"{STATIC_PREFIX}/redoc.standalone.js",
        redoc_favicon_url=f"{STATIC_PREFIX}/favicon.png",
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = REDOC_CSP
    return page


@router.get(STATIC_PREFIX + "/{name}")
def docs_asset(name: str) -> FileResponse:
    """One of the bundled docs assets; 404 for any other name."""
    media_type = ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail="no such docs asset")
    return FileResponse(
        asset_dir() / name,
        media_type=media_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )
