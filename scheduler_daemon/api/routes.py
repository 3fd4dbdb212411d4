"""The route table: one description per route, used by the router, the auth check and the
OpenAPI document alike."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from aiohttp import web
from pydantic import BaseModel

Role = Literal["read", "write", "admin"]
ROLE_RANK: Mapping[Role, int] = {"read": 1, "write": 2, "admin": 3}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Response:
    description: str
    model: type[BaseModel] | None = None
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    tag: str
    role: Role | None  # None: no token needed (health, metrics, docs)
    responses: Mapping[int, Response]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path_params: Mapping[str, str] = field(default_factory=dict)  # name -> description
    errors: tuple[int, ...] = ()  # problem+json statuses besides auth and 500
    headers: Mapping[str, str] = field(default_factory=dict)  # request header -> description
    description: str = ""


ROUTE_SPEC = web.AppKey("route_spec", dict)  # aiohttp route object -> Route


def add_routes(app: web.Application, routes: list[Route]) -> None:
    specs: dict[object, Route] = {}
    for route in routes:
        registered = app.router.add_route(route.method, route.path, route.handler)
        specs[registered] = route
    app[ROUTE_SPEC] = specs


def spec_of(request: web.Request) -> Route | None:
    specs: dict[object, Route] = request.app[ROUTE_SPEC]
    return specs.get(request.match_info.route)
