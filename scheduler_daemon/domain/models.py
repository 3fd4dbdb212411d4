"""Task, attempt and result types shared by the store, the engine and the API."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler_daemon.domain.backoff import DEFAULT_MAX_ATTEMPTS
from scheduler_daemon.domain.ids import uuid7


class TaskStatus(enum.StrEnum):
    WAITING = "waiting"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class Outcome(enum.StrEnum):
    """How one attempt ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the action reported an error
    TIMED_OUT = "timed_out"  # the attempt ran past its timeout
    LOST = "lost"  # the lease expired: the daemon running it died or stalled


@dataclass(frozen=True, slots=True)
class NewTask:
    """A validated task ready to insert. ``run_at`` None means now (the database's now)."""

    action: str
    payload: dict[str, Any]
    run_at: datetime | None = None
    delay_s: float | None = None
    queue: str = "default"
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_s: float = 30.0
    idempotency_key: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: uuid.UUID = field(default_factory=uuid7)
    depends_on: tuple[uuid.UUID, ...] = ()
    request_hash: str | None = None  # fingerprint of the request, for idempotent repeats
    schedule_id: uuid.UUID | None = None
    scheduled_for: datetime | None = None
    parent_task_id: uuid.UUID | None = None
    payload_json: str | None = None  # the payload already encoded, when the caller has it
    # The task's own retry delays (None: its queue's, else the daemon's [retry]).
    retry_base_s: float | None = None
    retry_cap_s: float | None = None


@dataclass(frozen=True, slots=True)
class Task:
    id: uuid.UUID
    action: str
    payload: dict[str, Any]
    queue: str
    priority: int
    status: TaskStatus
    run_at: datetime
    attempts: int
    max_attempts: int
    timeout_s: float
    idempotency_key: str | None
    metadata: dict[str, Any]
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None
    result: Any
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    depends_on: tuple[uuid.UUID, ...] = ()
    schedule_id: uuid.UUID | None = None
    scheduled_for: datetime | None = None
    parent_task_id: uuid.UUID | None = None
    request_hash: str | None = None
    retry_base_s: float | None = None
    retry_cap_s: float | None = None
    # Read-time, not stored: True when no running daemon can run the task's action (None: it
    # can be run, or nobody looked, as in lists).
    no_capable_worker: bool | None = None


@dataclass(frozen=True, slots=True)
class Attempt:
    task_id: uuid.UUID
    number: int
    worker: str
    outcome: Outcome
    started_at: datetime
    finished_at: datetime
    duration_ms: float | None
    error: str | None
    output: str | None


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task this daemon holds the lease on, for attempt number ``attempt``."""

    id: uuid.UUID
    action: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout_s: float
    run_at: datetime
    series_start: int = 0  # attempts made before the current series (a manual retry)
    queue: str = "default"
    claimed_at: datetime | None = None  # the database's now() when claimed (lag: minus run_at)
    retry_base_s: float | None = None  # the task's own retry delays (None: the queue's or default)
    retry_cap_s: float | None = None

    @property
    def series_attempt(self) -> int:
        """The attempt's number within its series: what max_attempts counts."""
        return self.attempt - self.series_start


@dataclass(frozen=True, slots=True)
class AttemptResult:
    """What the executor hands the completer: one finished attempt and what follows from it."""

    task_id: uuid.UUID
    attempt: int
    outcome: Outcome
    next_status: TaskStatus  # completed, scheduled (retry) or failed
    retry_in_s: float | None = None  # delay before the retry when next_status is scheduled
    error: str | None = None
    output: str | None = None
    result: Any = None
    duration_ms: float = 0.0
    action: str = ""  # for metrics
    queue: str = "default"


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Task]
    next_cursor: str | None
