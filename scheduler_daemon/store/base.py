"""The store ports: what the engine, the API and the AWS loops need of a store, one Protocol
per concern, with the values they exchange. PostgreSQL implements them (``store/postgres.py``,
``store/schedules.py``, ``store/queues.py``, ``store/workers.py``, ``store/retention.py``);
the tests' in-memory store implements ``EngineStore``, and ``tests/contract/`` runs the same
cases against both."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
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
from scheduler_daemon.domain.schedules import Expansion, Schedule


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


# -- schedules ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SchedulePage:
    items: list[Schedule]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class ExpansionPass:
    expansions: list[Expansion]
    statements: int


# Decides a claimed schedule's expansion: (schedule, an earlier occurrence still pending, the
# database's now) -> what to make.
Planner = Callable[[Schedule, bool, datetime], Expansion]


class ExpansionStore(Protocol):
    """What the expander needs: claim due schedules and write their expansions."""

    async def expand(self, limit: int, planner: Planner) -> ExpansionPass: ...

    async def next_expansion_in(self) -> float | None: ...


class ScheduleStore(ExpansionStore, Protocol):
    """What the HTTP API needs of schedules (and, through the base, the expander)."""

    async def create_schedule(
        self, schedule: Schedule, first_task: NewTask | None = None
    ) -> tuple[Schedule, Task | None]: ...

    async def get_schedule(self, schedule_id: uuid.UUID) -> Schedule | None: ...

    async def update_schedule(
        self, schedule_id: uuid.UUID, change: Callable[[Schedule], Schedule]
    ) -> Schedule | None: ...

    async def set_paused(self, schedule_id: uuid.UUID, paused: bool) -> Schedule | None: ...

    async def delete_schedule(self, schedule_id: uuid.UUID) -> bool: ...

    async def list_schedules(
        self, *, paused: bool | None, name: str | None, limit: int, cursor: str | None
    ) -> SchedulePage: ...


# -- queues and workers ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueState:
    name: str
    depth: int  # scheduled tasks, due or not
    due: int  # scheduled and due now (waiting for a slot, a limit or a resume)
    running: int  # across all daemons
    oldest_due_age_s: float | None  # how long the longest-waiting due task has waited
    paused_at: datetime | None
    paused_by: str | None
    due_without_worker: int = 0  # due tasks whose action no live daemon runs
    actions_without_worker: tuple[str, ...] = ()


class QueueStore(Protocol):
    """Queues as operators see them, and pausing them (the HTTP API)."""

    async def list_queues(self, configured: Sequence[str]) -> list[QueueState]: ...

    async def get_queue(self, name: str) -> QueueState: ...

    async def pause(self, name: str, by: str) -> bool: ...

    async def resume(self, name: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class Unrunnable:
    """Due tasks of one queue and action that no live daemon can run."""

    queue: str
    action: str
    due: int
    oldest_due_age_s: float


class WorkerStore(Protocol):
    """Which actions the live daemons run (the API and the due-without-worker gauge)."""

    async def live_actions(self) -> frozenset[str]: ...

    async def unrunnable(self) -> list[Unrunnable]: ...

    async def unrunnable_by_action(self) -> dict[str, int]: ...


# -- retention ------------------------------------------------------------------------------


class PruneStore(Protocol):
    """What the pruner needs: delete (and with ``archive``, first copy) one batch of expired
    tasks; how many went."""

    async def prune(
        self, completed_after_s: float, failed_after_s: float, limit: int, archive: bool
    ) -> int: ...


# -- the eventbridge backend: the outbox and the claims of received wake-ups ------------------


@dataclass(frozen=True, slots=True)
class OutboxRow:
    """A task whose wake-up is to be published, or whose schedule is to be deleted."""

    task_id: uuid.UUID
    status: TaskStatus
    run_at: datetime
    due_in_s: float  # on the database's clock
    version: int  # wake_version
    published_version: int
    schedule: str | None  # an at() schedule that may exist for the task

    @property
    def needs_publishing(self) -> bool:
        return self.status is TaskStatus.SCHEDULED and self.published_version != self.version


@dataclass(frozen=True, slots=True)
class Published:
    """What AWS accepted for one row: the version now published (None: unchanged) and the
    schedule that exists for the task afterwards (None: none)."""

    task_id: uuid.UUID
    version: int | None
    schedule: str | None


@dataclass(frozen=True, slots=True)
class MessageTask:
    """The state of a received message's task, when it was not claimed."""

    status: TaskStatus
    version: int
    due_in_s: float
    queue: str = "default"
    paused: bool = False
    runnable: bool = True  # this daemon runs the task's action


class OutboxBatch(Protocol):
    """Rows picked by one publisher pass, locked until the pass ends."""

    @property
    def rows(self) -> Sequence[OutboxRow]: ...

    async def mark(self, published: Sequence[Published]) -> None: ...


class DeletionBatch(Protocol):
    """Names of at() schedules left behind by deleted tasks, locked until the pass ends."""

    @property
    def names(self) -> Sequence[str]: ...

    async def done(self, names: Sequence[str]) -> None: ...


class OutboxStore(Protocol):
    """What the outbox publisher and the SQS consumer need."""

    def batch(self, limit: int) -> AbstractAsyncContextManager[OutboxBatch]: ...

    def deletions(self, limit: int) -> AbstractAsyncContextManager[DeletionBatch]: ...

    async def count_pending(self) -> int: ...

    async def republish_stale(self, older_than_s: float, limit: int) -> list[uuid.UUID]: ...

    async def claim_messages(
        self,
        owner: str,
        messages: Sequence[tuple[uuid.UUID, int]],
        lease_s: float,
        exclude: Sequence[str] = (),
    ) -> list[ClaimedTask]: ...

    async def claim_queue_messages(
        self,
        owner: str,
        queue: str,
        messages: Sequence[tuple[uuid.UUID, int]],
        limit: int,
        lease_s: float,
        global_limit: int | None,
    ) -> list[ClaimedTask]: ...

    async def deferred(self, ids: Sequence[uuid.UUID]) -> None: ...

    async def message_tasks(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, MessageTask]: ...
