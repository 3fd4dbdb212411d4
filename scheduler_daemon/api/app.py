"""create_app: the aiohttp application, its middlewares and its routes."""

from __future__ import annotations

from aiohttp import web

from scheduler_daemon.api import health, tasks
from scheduler_daemon.api.auth import auth_middleware
from scheduler_daemon.api.context import CONTEXT, ApiContext
from scheduler_daemon.api.problems import problem_middleware
from scheduler_daemon.api.routes import Route, add_routes


def all_routes() -> list[Route]:
    return [*tasks.ROUTES, *health.ROUTES]


def create_app(ctx: ApiContext) -> web.Application:
    app = web.Application(
        client_max_size=ctx.settings().http.body_limit_bytes,
        middlewares=[problem_middleware, auth_middleware],
    )
    app[CONTEXT] = ctx
    add_routes(app, all_routes())
    return app
