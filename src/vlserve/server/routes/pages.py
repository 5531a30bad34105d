"""Pages for people: the playground at `/` and the API docs, all served from files
installed with the package, so they work on a machine with no internet.

The docs' scripts come from the `fastapi-offline` package (Swagger UI and ReDoc bundled
with their licences) instead of FastAPI's default CDN. These paths need no API key: the
page asks for one and sends it with its API calls.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

PLAYGROUND_DIR = files("vlserve.server") / "playground"
DOCS_ASSETS_DIR = files("fastapi_offline") / "static"
PLAYGROUND_PREFIX = "/playground"
DOCS_ASSETS_PREFIX = "/docs-assets"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def playground() -> FileResponse:
    return FileResponse(str(PLAYGROUND_DIR / "index.html"), headers={"Cache-Control": "no-cache"})


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="vlserve API",
                               swagger_js_url=f"{DOCS_ASSETS_PREFIX}/swagger-ui-bundle.js",
                               swagger_css_url=f"{DOCS_ASSETS_PREFIX}/swagger-ui.css",
                               swagger_favicon_url=f"{DOCS_ASSETS_PREFIX}/favicon.png",
                               oauth2_redirect_url="/docs/oauth2-redirect",
                               swagger_ui_parameters={"validatorUrl": None})  # no call to swagger.io


@router.get("/docs/oauth2-redirect")
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title="vlserve API",
                          redoc_js_url=f"{DOCS_ASSETS_PREFIX}/redoc.standalone.js",
                          redoc_favicon_url=f"{DOCS_ASSETS_PREFIX}/favicon.png", with_google_fonts=False)


def mount_assets(app: FastAPI) -> None:
    app.mount(PLAYGROUND_PREFIX, StaticFiles(directory=str(PLAYGROUND_DIR)), name="playground")
    app.mount(DOCS_ASSETS_PREFIX, StaticFiles(directory=str(DOCS_ASSETS_DIR)), name="docs-assets")
