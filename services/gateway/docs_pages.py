"""The API reference pages, /docs (Swagger UI) and /redoc (ReDoc), from the files the
fastapi-offline package ships: they load with no network. A Content-Security-Policy keeps the
browser on this server (ReDoc would otherwise fetch its own logo from a CDN)."""

from __future__ import annotations

import pathlib

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

FILES = pathlib.Path(fastapi_offline.__file__).resolve().parent / "static"
STATIC_URL = "/docs-static"
# Inline scripts and styles: both pages start from an inline snippet; ReDoc runs its search in a blob worker.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
       "frame-ancestors 'self'")


def _page(html: HTMLResponse) -> HTMLResponse:
    html.headers["Content-Security-Policy"] = CSP
    return html


def install(app: FastAPI) -> None:
    """Serve the two pages and their files; the app is made with `docs_url=None, redoc_url=None`."""
    app.mount(STATIC_URL, StaticFiles(directory=FILES), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return _page(get_swagger_ui_html(
            openapi_url=openapi_url, title=f"{app.title} - API reference", oauth2_redirect_url=oauth2_redirect,
            swagger_js_url=f"{STATIC_URL}/swagger-ui-bundle.js", swagger_css_url=f"{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{STATIC_URL}/favicon.png", swagger_ui_parameters=app.swagger_ui_parameters))

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return _page(get_redoc_html(openapi_url=openapi_url, title=f"{app.title} - ReDoc",
                                    redoc_js_url=f"{STATIC_URL}/redoc.standalone.js",
                                    redoc_favicon_url=f"{STATIC_URL}/favicon.png", with_google_fonts=False))
