"""``GET /metrics`` (Prometheus text, no token needed) and the middleware that counts requests."""

from __future__ import annotations

import time
from collections.abc import Iterable

from aiohttp import web

from scheduler_daemon.api.problems import Handler
from scheduler_daemon.api.routes import Response, Route, spec_of
from scheduler_daemon.domain.models import Task
from scheduler_daemon.metrics import UNMATCHED_ROUTE, Metrics

METRICS = web.AppKey("metrics", Metrics)
CONTENT_TYPE = "text/plain; version=0.0.4"


def metrics_of(request: web.Request) -> Metrics:
    return request.app[METRICS]


def count_created(request: web.Request, outcomes: Iterable[tuple[Task, bool]]) -> None:
    """Count the tasks a create request inserted (an idempotent repeat is not counted)."""
    metrics_of(request).created((task.action, task.queue) for task, new in outcomes if new)


def route_label(request: web.Request) -> str:
    """The route template (``/v1/tasks/{task_id}``, never the raw path: the label set stays
    bounded), or ``unmatched`` when no route matched."""
    spec = spec_of(request)
    if spec is not None:
        return spec.path
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else UNMATCHED_ROUTE


@web.middleware
async def http_metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: sees the final status, problem responses included; an exception that gets
    past the problem middleware counts as the 500 aiohttp answers with (a request cancelled
    because its client went away is not counted)."""
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        _record(request, exc.status, started)
        raise
    except Exception:
        _record(request, 500, started)
        raise
    _record(request, response.status, started)
    return response


def _record(request: web.Request, status: int, started: float) -> None:
    metrics_of(request).http_request(route_label(request), status, time.perf_counter() - started)


async def metrics(request: web.Request) -> web.Response:
    m = metrics_of(request)
    await m.refresh()
    return web.Response(body=m.render(), headers={"Content-Type": f"{CONTENT_TYPE}; charset=utf-8"})


ROUTES = [
    Route(
        "GET",
        "/metrics",
        metrics,
        "metrics",
        "Prometheus metrics",
        "health",
        None,
        {200: Response("the metrics in the Prometheus text format", None, CONTENT_TYPE)},
    ),
]
