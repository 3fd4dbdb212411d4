"""Routes of the dashboard: the HTML shell, its static files, and who the caller is.

The shell is the same page for ``/ui`` and every deep link under it (``/ui/tasks/<id>``); the
browser-side router picks the page from the path. Static files live under a versioned prefix
(``/ui/static/<hash of the files>/...``), so they can be cached for a year: a new release
changes the hash, and the shell (never cached without revalidation) names the new prefix.
Relative ``import`` statements between the modules stay within that prefix.

None of these routes is in the API's route table: they need no token (the page itself holds no
data; the data comes from the JSON API, which checks the token), and they stay out of the
OpenAPI document. ``/ui/api/whoami`` checks the token itself, to tell the page which buttons
the caller's role may use.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

from aiohttp import web

from scheduler_daemon.api.auth import authenticate
from scheduler_daemon.api.context import context
from scheduler_daemon.api.problems import Problem

PREFIX = "/ui"
STATIC_PREFIX = f"{PREFIX}/static"
STATIC_DIR = Path(__file__).parent / "static"
SHELL_FILE = Path(__file__).parent / "shell.html"

# No inline script or style, nothing from another origin. data: only for images (none yet,
# but browsers render some form controls' icons that way).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_SHELL_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
IMMUTABLE = "public, max-age=31536000, immutable"
_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}


@functools.cache
def asset_version() -> str:
    """A hash of every static file's name and content: changes whenever one changes."""
    digest = hashlib.sha256()
    for path in sorted(p for p in STATIC_DIR.rglob("*") if p.is_file()):
        digest.update(path.relative_to(STATIC_DIR).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@functools.cache
def shell_html() -> str:
    return SHELL_FILE.read_text(encoding="utf-8").replace(
        "{static}", f"{STATIC_PREFIX}/{asset_version()}"
    )


async def shell(request: web.Request) -> web.Response:
    return web.Response(text=shell_html(), content_type="text/html", headers=_SHELL_HEADERS)


async def static_file(request: web.Request) -> web.StreamResponse:
    root = STATIC_DIR.resolve()
    path = (root / request.match_info["path"]).resolve()
    if not path.is_relative_to(root) or not path.is_file():
        raise web.HTTPNotFound()
    # A file asked for under another release's prefix is served, but not cached for long.
    current = request.match_info["version"] == asset_version()
    headers = {
        "Cache-Control": IMMUTABLE if current else "no-cache",
        "X-Content-Type-Options": "nosniff",
    }
    content_type = _CONTENT_TYPES.get(path.suffix)
    if content_type is not None:
        headers["Content-Type"] = content_type
    return web.FileResponse(path, headers=headers)


async def whoami(request: web.Request) -> web.Response:
    """``{"anonymous", "name", "role"}`` of the bearer token sent; 401 without a valid one
    (when tokens are configured). With no tokens configured, every request may do everything."""
    tokens = context(request).settings().http.tokens
    if not tokens:
        return web.json_response({"anonymous": True, "name": None, "role": "admin"})
    token = authenticate(request.headers.get("Authorization"), tokens)
    if token is None:
        raise Problem(
            401,
            "Unauthorized",
            "send Authorization: Bearer <token> with a valid token",
            headers={"WWW-Authenticate": 'Bearer realm="scheduler-daemon"'},
        )
    return web.json_response(
        {"anonymous": False, "name": token.name, "role": token.role},
        headers={"Cache-Control": "no-store"},
    )


def add_ui_routes(app: web.Application) -> None:
    """Register the dashboard. The static and API routes come before the catch-all shell."""
    app.router.add_get(f"{STATIC_PREFIX}/{{version}}/{{path:.+}}", static_file, name="ui-static")
    app.router.add_get(f"{PREFIX}/api/whoami", whoami, name="ui-whoami")
    app.router.add_get(PREFIX, shell, name="ui")
    app.router.add_get(f"{PREFIX}/{{tail:.*}}", shell, name="ui-page")
