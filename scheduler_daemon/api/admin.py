"""Administration: the effective config (secrets masked) and when it was loaded."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel

from scheduler_daemon.api.context import context
from scheduler_daemon.api.routes import Response, Route
from scheduler_daemon.api.tasks import json_response
from scheduler_daemon.settings import masked


class EffectiveConfig(BaseModel):
    config: dict[str, Any]
    loaded_at: datetime | None  # the start, or the last SIGHUP reload


async def get_config(request: web.Request) -> web.Response:
    ctx = context(request)
    loaded_at = ctx.config_loaded_at() if ctx.config_loaded_at is not None else None
    return json_response(EffectiveConfig(config=masked(ctx.settings()), loaded_at=loaded_at))


ROUTES = [
    Route(
        "GET",
        "/v1/admin/config",
        get_config,
        "getConfig",
        "The effective config, secrets masked, and when it was loaded",
        "admin",
        "admin",
        {200: Response("the effective config", EffectiveConfig)},
        description="Reload it with SIGHUP; keys that need a restart keep their running values.",
    ),
]
