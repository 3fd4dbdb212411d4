"""Queue routes: list queues with their depth and limits, pause and resume one."""

from __future__ import annotations

import re
from datetime import datetime

from aiohttp import web
from pydantic import BaseModel, Field

from scheduler_daemon.api.auth import CALLER
from scheduler_daemon.api.context import ApiContext, context
from scheduler_daemon.api.problems import Problem
from scheduler_daemon.api.routes import Response, Route
from scheduler_daemon.api.schemas import NAME_PATTERN
from scheduler_daemon.api.tasks import json_response
from scheduler_daemon.logs import get_logger
from scheduler_daemon.settings import QueueLimits
from scheduler_daemon.store.base import QueueState, QueueStore

QUEUE_NAME = {"name": "the queue's name"}
_NAME = Field(max_length=100, pattern=NAME_PATTERN)

log = get_logger("api")


class QueueLimitsOut(BaseModel):
    """This daemon's configured limits (``[queues.<name>]``); null: none."""

    concurrency: int | None = None
    global_concurrency: int | None = None
    rate_per_s: float | None = None
    burst: int | None = None


class QueueOut(BaseModel):
    name: str = _NAME
    paused: bool
    paused_at: datetime | None
    paused_by: str | None = Field(description="the token name that paused it")
    depth: int = Field(description="scheduled tasks, due or not")
    due: int = Field(description="scheduled tasks that are due now")
    running: int = Field(description="running tasks, across all daemons")
    oldest_due_age_s: float | None = Field(
        description="seconds the longest-waiting due task has waited; null: none due"
    )
    due_without_worker: int = Field(
        default=0,
        description="due tasks whose action no running daemon can run (they wait for one)",
    )
    actions_without_worker: list[str] = Field(
        default_factory=list, description="the actions of those tasks"
    )
    limits: QueueLimitsOut


class QueueListOut(BaseModel):
    queues: list[QueueOut]


def _store(ctx: ApiContext) -> QueueStore:
    assert ctx.queues is not None, "the queue store is not configured"
    return ctx.queues


def _out(state: QueueState, limits: QueueLimits | None) -> QueueOut:
    return QueueOut(
        name=state.name,
        paused=state.paused_at is not None,
        paused_at=state.paused_at,
        paused_by=state.paused_by,
        depth=state.depth,
        due=state.due,
        running=state.running,
        oldest_due_age_s=state.oldest_due_age_s,
        due_without_worker=state.due_without_worker,
        actions_without_worker=list(state.actions_without_worker),
        limits=QueueLimitsOut.model_validate(limits.model_dump()) if limits else QueueLimitsOut(),
    )


def _name(request: web.Request) -> str:
    name = request.match_info["name"]
    if len(name) > 100 or not re.fullmatch(NAME_PATTERN, name):
        raise Problem(
            404, "Not Found", f"no queue {name[:100]!r}: names are 1-100 of A-Z a-z 0-9 _ . : -"
        )
    return name


async def list_queues(request: web.Request) -> web.Response:
    ctx = context(request)
    configured = ctx.settings().queues
    states = await _store(ctx).list_queues(sorted({"default", *configured}))
    return json_response(QueueListOut(queues=[_out(s, configured.get(s.name)) for s in states]))


async def get_queue(request: web.Request) -> web.Response:
    ctx = context(request)
    name = _name(request)
    state = await _store(ctx).get_queue(name)
    return json_response(_out(state, ctx.settings().queues.get(name)))


async def pause_queue(request: web.Request) -> web.Response:
    ctx = context(request)
    name = _name(request)
    caller = request.get(CALLER, "anonymous")
    if await _store(ctx).pause(name, caller):
        log.info("queue_paused", queue=name, by=caller)
    return await get_queue(request)


async def resume_queue(request: web.Request) -> web.Response:
    ctx = context(request)
    name = _name(request)
    if await _store(ctx).resume(name):
        log.info("queue_resumed", queue=name, by=request.get(CALLER, "anonymous"))
    return await get_queue(request)


_ONE = Response("the queue", QueueOut)

ROUTES = [
    Route(
        "GET",
        "/v1/queues",
        list_queues,
        "listQueues",
        "Queues: depth, due, running, oldest due age, paused state and limits",
        "queues",
        "read",
        {
            200: Response(
                "every queue with scheduled or running tasks, paused or configured", QueueListOut
            )
        },
        description=(
            "Lists `default`, every queue with limits in the config, every paused queue and "
            "every queue with scheduled or running tasks. Counts are across all daemons; "
            "`limits` are this daemon's configuration."
        ),
    ),
    Route(
        "GET",
        "/v1/queues/{name}",
        get_queue,
        "getQueue",
        "One queue (any valid name: a queue without tasks is empty)",
        "queues",
        "read",
        {200: _ONE},
        path_params=QUEUE_NAME,
        errors=(404,),
    ),
    Route(
        "POST",
        "/v1/queues/{name}/pause",
        pause_queue,
        "pauseQueue",
        "Pause: no daemon starts the queue's tasks until it is resumed",
        "queues",
        "admin",
        {200: _ONE},
        path_params=QUEUE_NAME,
        errors=(404,),
        description=(
            "Running tasks finish; due tasks wait. Tasks can still be created in a paused "
            "queue. Pausing a paused queue changes nothing."
        ),
    ),
    Route(
        "POST",
        "/v1/queues/{name}/resume",
        resume_queue,
        "resumeQueue",
        "Resume: due tasks start at once (every daemon is notified)",
        "queues",
        "admin",
        {200: _ONE},
        path_params=QUEUE_NAME,
        errors=(404,),
    ),
]
