"""``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) served from installed files, no CDN.

FastAPI's own pages load their scripts from a CDN, so offline (an air-gapped lab, a
device network) they are blank. The ``fastapi-offline`` package ships the same
scripts; this module serves them under :data:`ASSETS_PATH` and renders both pages
with FastAPI's HTML helpers, which then never name a host but ours.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_PATH", "CONTENT_SECURITY_POLICY", "install_docs"]

ASSETS_PATH = "/docs-assets"
"""Where the Swagger UI and ReDoc scripts, their stylesheet and the favicon are served."""

_ASSETS_PACKAGE = ("fastapi_offline", "static")

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",  # the page's own SwaggerUIBundle(...) call
        "style-src 'self' 'unsafe-inline'",  # ReDoc styles itself inline
        "img-src 'self' data:",  # not ReDoc's attribution logo from its CDN
        "worker-src 'self' blob:",  # ReDoc's search index
        "connect-src 'self'",
    )
)
"""Both pages may load from our origin only: a CDN fetch is refused before it is made."""

SWAGGER_UI_PARAMETERS = {
    "validatorUrl": None,  # else Swagger UI asks validator.swagger.io about our spec
    "persistAuthorization": True,  # the token survives a reload of the page
}


def install_docs(app: FastAPI, docs_path: str = "/docs", redoc_path: str = "/redoc") -> None:
    """Serve Swagger UI at ``docs_path`` and ReDoc at ``redoc_path`` from local assets.

    Create ``app`` with ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages
    do not take these paths first.
    """
    app.mount(ASSETS_PATH, StaticFiles(packages=[_ASSETS_PACKAGE]), name="docs-assets")
    openapi_path = app.openapi_url or "/openapi.json"

    @app.get(docs_path, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_path}",
            title=f"{app.title} – Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            swagger_ui_parameters=SWAGGER_UI_PARAMETERS,
        )
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page

    @app.get(redoc_path, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{openapi_path}",
            title=f"{app.title} – ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
        page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page
