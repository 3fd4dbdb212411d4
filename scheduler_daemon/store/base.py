"""The store interfaces the engine and the API depend on."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from scheduler_daemon.domain.models import (
    Attempt,
    AttemptResult,
    ClaimedTask,
    NewTask,
    Page,
    Task,
    TaskStatus,
)


@dataclass(frozen=True, slots=True)
class Rescued:
    task_id: uuid.UUID
    status: TaskStatus
    attempt: int
    owner: str
    action: str = ""
    queue: str = "default"


@dataclass(frozen=True, slots=True)
class TaskFilter:
    statuses: tuple[TaskStatus, ...] = ()
    action: str | None = None
    queue: str | None = None
    schedule_id: uuid.UUID | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    run_after: datetime | None = None
    run_before: datetime | None = None
    # A task id (when it is a UUID) or an idempotency key or its prefix.
    search: str | None = None


@dataclass(frozen=True, slots=True)
class TaskCounts:
    """Tasks counted in one statement, as of ``at`` (the database's now())."""

    at: datetime
    by_status_queue: dict[tuple[TaskStatus, str], int]  # pairs with no task are left out
    due_now: int  # scheduled and due, not yet claimed
    failed_last_hour: int  # failed (for good) within the hour before ``at``


class EngineStore(Protocol):
    """What the engine's loops need: claim, complete, leases, rescue."""

    async def claim(
        self, owner: str, limit: int, lease_s: float, exclude: Sequence[str] = ()
    ) -> list[ClaimedTask]: ...

    async def claim_queue(
        self, owner: str, queue: str, limit: int, lease_s: float, global_limit: int | None
    ) -> list[ClaimedTask]: ...

    async def next_due_in(self, exclude: Sequence[str] = ()) -> float | None: ...

    async def paused_queues(self) -> frozenset[str]: ...

    async def complete(self, owner: str, results: Sequence[AttemptResult]) -> set[uuid.UUID]: ...

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[uuid.UUID, int]], lease_s: float
    ) -> set[tuple[uuid.UUID, int]]: ...

    async def release(
        self, owner: str, held: Sequence[tuple[uuid.UUID, int]]
    ) -> set[uuid.UUID]: ...

    async def rescue_expired(self, limit: int) -> list[Rescued]: ...


class TaskStore(Protocol):
    """What the HTTP API needs."""

    async def create_task(self, task: NewTask) -> tuple[Task, bool]: ...

    async def create_tasks(self, tasks: Sequence[NewTask]) -> list[tuple[Task, bool]]: ...

    async def run_now(self, task_id: uuid.UUID) -> Task | None: ...

    async def retry_task(self, task_id: uuid.UUID) -> Task | None: ...

    async def retry_dead_letters(
        self,
        ids: Sequence[uuid.UUID] | None,
        action: str | None,
        queue: str | None,
        limit: int,
    ) -> list[uuid.UUID]: ...

    async def discard_dead_letters(
        self,
        ids: Sequence[uuid.UUID] | None,
        action: str | None,
        queue: str | None,
        limit: int,
    ) -> list[uuid.UUID]: ...

    async def get_task(self, task_id: uuid.UUID) -> Task | None: ...

    async def list_tasks(self, flt: TaskFilter, limit: int, cursor: str | None) -> Page: ...

    async def list_attempts(self, task_id: uuid.UUID) -> list[Attempt]: ...

    async def cancel_task(self, task_id: uuid.UUID) -> Task | None: ...

    async def count_tasks(self) -> TaskCounts: ...

    async def ping(self) -> None: ...
