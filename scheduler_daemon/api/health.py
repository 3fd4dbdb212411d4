"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from scheduler_daemon.api.context import context
from scheduler_daemon.api.routes import Response, Route
from scheduler_daemon.api.schemas import Health, Readiness
from scheduler_daemon.api.tasks import json_response


async def healthz(request: web.Request) -> web.Response:
    return json_response(Health(status="ok"))


async def readyz(request: web.Request) -> web.Response:
    problems = await context(request).readiness.problems()
    if problems:
        return json_response(Readiness(status="unavailable", reasons=problems), status=503)
    return json_response(Readiness(status="ready"))


ROUTES = [
    Route(
        "GET",
        "/healthz",
        healthz,
        "healthz",
        "Liveness: the process answers",
        "health",
        None,
        {200: Response("alive", Health)},
    ),
    Route(
        "GET",
        "/readyz",
        readyz,
        "readyz",
        "Readiness: may this daemon get traffic",
        "health",
        None,
        {
            200: Response("ready", Readiness),
            503: Response("not ready, with the reasons", Readiness),
        },
    ),
]
