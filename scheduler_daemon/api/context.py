"""What the API's handlers share: the store, the actions, readiness and the live settings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from aiohttp import web

from scheduler_daemon.actions.base import ActionRegistry
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.base import QueueStore, ScheduleStore, TaskStore, WorkerStore


class ReadinessCheck(Protocol):
    async def problems(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class ApiContext:
    store: TaskStore
    actions: ActionRegistry
    readiness: ReadinessCheck
    settings: Callable[[], Settings]  # read per request: reloadable
    schedules: ScheduleStore | None = None
    config_loaded_at: Callable[[], datetime] | None = None  # when the settings were loaded
    queues: QueueStore | None = None
    workers: WorkerStore | None = None  # which actions running daemons can run


CONTEXT = web.AppKey("context", ApiContext)


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]
