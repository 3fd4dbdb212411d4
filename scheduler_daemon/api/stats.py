"""``GET /v1/stats``: what the dashboard shows. Task counts come from PostgreSQL (the whole
cluster's view, on the database's clock); ``minutes`` is what this daemon process did over
the last hour (kept in memory by ``Metrics.activity``: each replica answers for itself)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
from aiohttp import web
from pydantic import BaseModel, Field

from scheduler_daemon.api.context import context
from scheduler_daemon.api.metrics import metrics_of
from scheduler_daemon.api.problems import unavailable
from scheduler_daemon.api.routes import Response, Route
from scheduler_daemon.api.tasks import json_response
from scheduler_daemon.domain.models import TaskStatus
from scheduler_daemon.logs import get_logger
from scheduler_daemon.store.base import TaskCounts

# A dashboard refreshes; a count that takes longer than this is answered with a 503.
COUNT_TIMEOUT_S = 10.0

_log = get_logger("api")


class StatusCounts(BaseModel):
    """Tasks in each status (every status present, zero included)."""

    waiting: int = 0
    scheduled: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


class TaskCountsOut(BaseModel):
    by_status: StatusCounts
    by_queue: dict[str, StatusCounts] = Field(description="every queue that has a task")
    due_now: int = Field(description="scheduled tasks whose run_at has come, not yet claimed")
    running: int
    failed_last_hour: int = Field(description="tasks that failed for good in the last hour")


class MinuteOut(BaseModel):
    start: datetime = Field(description="the minute's start, UTC")
    completed: int = Field(description="attempts this daemon recorded as succeeded")
    failed: int = Field(description="attempts this daemon recorded as failed, timed out or lost")
    started: int = Field(description="tasks this daemon claimed (attempts started)")
    lag_p50_s: float | None = Field(
        description="median start lag (claimed_at - run_at) of the tasks this daemon claimed; "
        "null when it claimed none that minute"
    )
    lag_p99_s: float | None = Field(description="99th percentile start lag; null likewise")


class UnrunnableOut(BaseModel):
    queue: str
    action: str
    due: int = Field(description="due tasks of this queue and action")
    oldest_due_age_s: float = Field(description="how long the oldest of them has waited")


class Stats(BaseModel):
    generated_at: datetime = Field(description="when the counts were taken (database clock)")
    window_s: int = Field(description="the span of minutes, in seconds")
    ready: bool = Field(description="whether this daemon is ready, as /readyz answers")
    problems: list[str] = Field(description="why it is not ready, as /readyz lists them")
    counts: TaskCountsOut
    no_capable_worker: list[UnrunnableOut] = Field(
        default_factory=list,
        description="due tasks that no running daemon can run (their action is not loaded "
        "anywhere, e.g. a handler only a newer release registers): they wait in scheduled",
    )
    minutes: list[MinuteOut] = Field(
        description="this daemon's last 60 minutes, oldest first; the last is the current one"
    )


def counts_out(counts: TaskCounts) -> TaskCountsOut:
    totals = dict.fromkeys(TaskStatus, 0)
    queues: dict[str, dict[TaskStatus, int]] = {}
    for (status, queue), n in counts.by_status_queue.items():
        totals[status] += n
        queues.setdefault(queue, dict.fromkeys(TaskStatus, 0))[status] += n
    return TaskCountsOut(
        by_status=_statuses(totals),
        by_queue={queue: _statuses(by) for queue, by in sorted(queues.items())},
        due_now=counts.due_now,
        running=totals[TaskStatus.RUNNING],
        failed_last_hour=counts.failed_last_hour,
    )


def _statuses(by: dict[TaskStatus, int]) -> StatusCounts:
    return StatusCounts(**{status.value: n for status, n in by.items()})


async def get_stats(request: web.Request) -> web.Response:
    ctx = context(request)
    try:
        async with asyncio.timeout(COUNT_TIMEOUT_S):
            counts = await ctx.store.count_tasks()
            unrunnable = await ctx.workers.unrunnable() if ctx.workers is not None else []
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        # The database is down or slow: say so (the dashboard shows it), not a 500.
        _log.warning("stats_count_failed", error=f"{type(exc).__name__}: {exc}")
        raise unavailable(
            "Task counts unavailable", f"counting tasks failed: {type(exc).__name__}"
        ) from None
    problems = await ctx.readiness.problems()
    activity = metrics_of(request).activity
    minutes = activity.minutes()
    return json_response(
        Stats(
            generated_at=counts.at.astimezone(UTC),
            window_s=activity.window_minutes * 60,
            ready=not problems,
            problems=problems,
            counts=counts_out(counts),
            no_capable_worker=[
                UnrunnableOut(
                    queue=u.queue,
                    action=u.action,
                    due=u.due,
                    oldest_due_age_s=u.oldest_due_age_s,
                )
                for u in unrunnable
            ],
            minutes=[
                MinuteOut(
                    start=m.start,
                    completed=m.completed,
                    failed=m.failed,
                    started=m.started,
                    lag_p50_s=m.lag_p50_s,
                    lag_p99_s=m.lag_p99_s,
                )
                for m in minutes
            ],
        )
    )


ROUTES = [
    Route(
        "GET",
        "/v1/stats",
        get_stats,
        "getStats",
        "Task counts, readiness and this daemon's last hour, minute by minute",
        "stats",
        "read",
        {200: Response("the dashboard's numbers", Stats)},
        errors=(503,),
        description="Counts are the database's (all daemons); minutes are this daemon's own, "
        "kept in memory since it started.",
    ),
]
