"""Swagger UI at /docs, from the assets the swagger-ui-bundle package ships: no CDN.

The page loads only files from this server (Swagger UI's under /docs/static/, our start-up
script under /docs/assets/), so its Content-Security-Policy allows 'self' alone.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from scheduler_daemon.api.routes import Response, Route

STATIC_PREFIX = "/docs/static"  # Swagger UI's own files
ASSETS_PREFIX = "/docs/assets"  # ours: the start-up script
ASSETS_DIR = Path(__file__).parent / "static"
SWAGGER_UI_DIR = Path(str(swagger_ui_path))

# data: only for images: Swagger UI's stylesheet draws its icons as data: SVGs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'self'"
)

PAGE = f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <title>scheduler-daemon API</title>
    <link rel="stylesheet" href="{STATIC_PREFIX}/swagger-ui.css">
    <link rel="stylesheet" href="{STATIC_PREFIX}/index.css">
    <link rel="icon" type="image/png" href="{STATIC_PREFIX}/favicon-32x32.png" sizes="32x32">
  </head>
  <body>
    <div id="swagger-ui"></div>
    <script src="{STATIC_PREFIX}/swagger-ui-bundle.js"></script>
    <script src="{STATIC_PREFIX}/swagger-ui-standalone-preset.js"></script>
    <script src="{ASSETS_PREFIX}/docs-init.js"></script>
  </body>
</html>
"""


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(
        text=PAGE,
        content_type="text/html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        },
    )


def add_docs_static(app: web.Application) -> None:
    """Serve the page's scripts and styles (static routes are not in the route table)."""
    app.router.add_static(STATIC_PREFIX, SWAGGER_UI_DIR, name="docs-static")
    app.router.add_static(ASSETS_PREFIX, ASSETS_DIR, name="docs-assets")


ROUTES = [
    Route(
        "GET",
        "/docs",
        docs_page,
        "getDocs",
        "Interactive API documentation (Swagger UI)",
        "docs",
        None,
        {200: Response("the Swagger UI page", None, "text/html")},
        description="Reads /openapi.json. Authorize with a bearer token to try operations.",
    ),
]
