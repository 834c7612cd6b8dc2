"""The API docs in a browser: Swagger UI at ``/docs`` and ReDoc at ``/redoc``, their scripts
served from the ``fastapi-offline`` package (no CDN), both reading ``/openapi.json``.

The pages forbid any request off this origin (Content-Security-Policy): ReDoc's sidebar would
otherwise fetch its vendor's logo from a CDN, and Swagger UI could call its online validator.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from stratus.gateway.authz import needs
from stratus.gateway.browser import COOKIE, cookie_accepted, signs_out
from stratus.gateway.edge import DOCS_ASSETS, is_public
from stratus.security.roles import Permission

ASSETS_DIR = Path(str(files("fastapi_offline") / "static"))
# Inline scripts: the pages' own start-up; blob: workers: ReDoc's search index.
POLICY = ("default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
          "img-src 'self' data:; worker-src 'self' blob:; connect-src 'self'; "
          "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
# No syntax highlighting of bodies: Swagger UI colours a response in one pass on the page's
# only thread, and the answer of a listing grows with the fleet (80 kB for 40 deployments
# took 3 to 8 s on a loaded machine, the page frozen meanwhile); plain text shows at once.
SWAGGER_PARAMETERS = {"validatorUrl": None, "persistAuthorization": False,
                      "withCredentials": True, "displayRequestDuration": True,
                      "syntaxHighlight": False}


def _page(html: HTMLResponse) -> HTMLResponse:
    html.headers["content-security-policy"] = POLICY
    html.headers["cache-control"] = "no-store"
    return html


def mount_docs(app: FastAPI, openapi_url: str = "/openapi.json") -> None:
    """Add the two pages and their assets; the permissions they need are in ``authz``."""
    app.mount(DOCS_ASSETS, StaticFiles(directory=ASSETS_DIR), name="docs-assets")
    title = f"{app.title} API"
    signed_in = [needs(Permission.AUTHENTICATED)]  # a bearer token or the browser session

    @app.get("/docs", include_in_schema=False, dependencies=signed_in)
    async def swagger_ui() -> HTMLResponse:
        return _page(get_swagger_ui_html(
            openapi_url=openapi_url, title=title, oauth2_redirect_url="/docs/oauth2-redirect",
            swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png",
            swagger_ui_parameters=SWAGGER_PARAMETERS))

    @app.get("/docs/oauth2-redirect", include_in_schema=False, dependencies=signed_in)
    async def swagger_ui_redirect() -> HTMLResponse:
        return _page(get_swagger_ui_oauth2_redirect_html())

    @app.get("/redoc", include_in_schema=False, dependencies=signed_in)
    async def redoc() -> HTMLResponse:
        return _page(get_redoc_html(
            openapi_url=openapi_url, title=title,
            redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False))


def document_credentials(document: dict[str, Any]) -> None:
    """Name the credentials each operation takes, in place: the bearer token everywhere but
    the public routes, and the browser session where ``gateway.browser`` accepts it. Swagger
    UI's *Authorize* then sends a pasted key on the routes the session does not open."""
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes["bearer"] = {"type": "http", "scheme": "bearer",
                         "description": "An API key, the admin key or a JWT"}
    schemes["session"] = {"type": "apiKey", "in": "cookie", "name": COOKIE,
                          "description": "The browser session the dashboard's sign-in sets"}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            verb = method.upper()
            if is_public(path) or signs_out(verb, path):
                operation["security"] = []
            elif cookie_accepted(verb, path):
                operation["security"] = [{"bearer": []}, {"session": []}]
            else:
                operation["security"] = [{"bearer": []}]
