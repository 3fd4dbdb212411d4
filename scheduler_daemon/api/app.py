"""create_app: the aiohttp application, its middlewares and its routes."""

from __future__ import annotations

from aiohttp import web

from scheduler_daemon.api import admin, dead_letters, docs, health, openapi, schedules, tasks
from scheduler_daemon.api.auth import auth_middleware
from scheduler_daemon.api.context import CONTEXT, ApiContext
from scheduler_daemon.api.metrics import METRICS, http_metrics_middleware
from scheduler_daemon.api.metrics import ROUTES as METRICS_ROUTES
from scheduler_daemon.api.problems import problem_middleware
from scheduler_daemon.api.queues import ROUTES as QUEUE_ROUTES
from scheduler_daemon.api.routes import Route, add_routes
from scheduler_daemon.api.stats import ROUTES as STATS_ROUTES
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.ui import add_ui_routes


def all_routes() -> list[Route]:
    return [
        *tasks.ROUTES,
        *schedules.ROUTES,
        *dead_letters.ROUTES,
        *STATS_ROUTES,
        *QUEUE_ROUTES,
        *admin.ROUTES,
        *health.ROUTES,
        *METRICS_ROUTES,
        *openapi.ROUTES,
        *docs.ROUTES,
    ]


def create_app(ctx: ApiContext, metrics: Metrics | None = None) -> web.Application:
    """``metrics``: the daemon's, which the engine records into too; None: the API's own."""
    app = web.Application(
        client_max_size=ctx.settings().http.body_limit_bytes,
        # Metrics outermost: they see the final status, problem responses included.
        middlewares=[http_metrics_middleware, problem_middleware, auth_middleware],
    )
    app[CONTEXT] = ctx
    app[METRICS] = metrics if metrics is not None else Metrics()
    add_routes(app, all_routes())
    docs.add_docs_static(app)
    add_ui_routes(app)  # the dashboard at /ui: outside the route table and OpenAPI
    return app
