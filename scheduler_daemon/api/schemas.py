"""Request and response models: the same pydantic models validate requests and describe them
in the OpenAPI document."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from scheduler_daemon.domain.backoff import MAX_RETRY_BASE_S, MAX_RETRY_CAP_S
from scheduler_daemon.domain.models import Attempt, NewTask, Task, TaskStatus

MAX_DELAY_S = 366 * 24 * 3600


def _storable_instant(value: datetime) -> datetime:
    """An instant PostgreSQL can hold: its UTC time within years 1 to 9999."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range: the UTC time must fall within years 1 to 9999") from None
    return value


def _no_nul(value: str | None) -> str | None:
    if value is not None and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


# Aware (an offset is required) and storable.
Instant = Annotated[AwareDatetime, AfterValidator(_storable_instant)]
# Text PostgreSQL can store.
Text = Annotated[str, AfterValidator(_no_nul)]
MAX_BATCH = 1000
MAX_LIST_LIMIT = 500
DEFAULT_LIST_LIMIT = 50
NAME_PATTERN = r"^[A-Za-z0-9_.:-]+$"


class RetryPolicy(BaseModel):
    """A task's retry policy; what it leaves out comes from its queue ([queues.NAME.retry]),
    else from the daemon's [retry]."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: int | None = Field(
        default=None, ge=1, le=100, description="attempts in all, the first one included"
    )
    base_s: float | None = Field(
        default=None, gt=0, le=MAX_RETRY_BASE_S, description="the delay after the first failure"
    )
    cap_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_RETRY_CAP_S,
        description="the longest delay; also caps a Retry-After the target asks for",
    )

    @model_validator(mode="after")
    def _cap_above_base(self) -> RetryPolicy:
        if self.base_s is not None and self.cap_s is not None and self.cap_s < self.base_s:
            raise ValueError("cap_s must not be below base_s")
        return self


def check_attempts(max_attempts: int | None, retry: RetryPolicy | None) -> None:
    """``max_attempts`` and ``retry.max_attempts`` say the same thing: one of them (or both,
    equal)."""
    wanted = retry.max_attempts if retry is not None else None
    if wanted is not None and max_attempts is not None and wanted != max_attempts:
        raise ValueError("give max_attempts or retry.max_attempts, not both")


class CreateTask(BaseModel):
    """Body of POST /v1/tasks (and one item of a batch)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    action: str = Field(
        min_length=1,
        max_length=100,
        pattern=NAME_PATTERN,
        description="what to run: webhook, log (alias message), noop, or a registered handler",
    )
    payload: dict[str, Any] = Field(
        default_factory=dict, description="the action's input, validated by the action"
    )
    run_at: Instant | None = Field(
        default=None,
        validation_alias=AliasChoices("run_at", "runAt", "executeAt"),
        description="when to run (ISO 8601 with offset); also runAt, executeAt",
    )
    delay_s: float | None = Field(
        default=None, ge=0, le=MAX_DELAY_S, description="run this many seconds from now"
    )
    queue: str = Field(default="default", min_length=1, max_length=100, pattern=NAME_PATTERN)
    priority: int = Field(default=0, ge=-1000, le=1000, description="higher runs first")
    max_attempts: int | None = Field(
        default=None, ge=1, le=100, description="the same as retry.max_attempts"
    )
    retry: RetryPolicy | None = Field(
        default=None,
        description="exponential backoff from base_s doubling up to cap_s, jittered; unset "
        "keys: the queue's policy, else the daemon's (by default 22 attempts over about a day)",
    )
    timeout_s: float | None = Field(default=None, gt=0, le=24 * 3600)
    idempotency_key: Text | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="a repeat with the same key and body returns the original task",
    )
    depends_on: list[uuid.UUID] = Field(
        default_factory=list,
        max_length=100,
        description="task ids that must complete first; the task waits in status waiting",
    )
    metadata: dict[str, Any] = Field(default_factory=dict, description="free-form, stored")
    recurrence: str | None = Field(
        default=None,
        max_length=200,
        description="daily, weekly, monthly or a cron string: the task repeats from run_at; "
        "each occurrence is a new task whose parent_task_id is the previous one",
    )

    @model_validator(mode="before")
    @classmethod
    def _seed_shorthand(cls, data: Any) -> Any:
        """Seed 000's ``{executeAt, url, method, data}`` means a webhook."""
        if isinstance(data, dict) and "action" not in data and "url" in data:
            data = dict(data)
            payload = {"url": data.pop("url")}
            for key in ("method", "data", "headers"):
                if key in data:
                    payload[key] = data.pop(key)
            data["action"] = "webhook"
            data["payload"] = payload
        return data

    @model_validator(mode="after")
    def _one_time(self) -> CreateTask:
        if self.run_at is not None and self.delay_s is not None:
            raise ValueError("give run_at or delay_s, not both")
        if len(set(self.depends_on)) != len(self.depends_on):
            raise ValueError("depends_on lists a task twice")
        check_attempts(self.max_attempts, self.retry)
        return self

    @property
    def wanted_attempts(self) -> int | None:
        """max_attempts as the request gives it (either spelling), None: the default."""
        if self.retry is not None and self.retry.max_attempts is not None:
            return self.retry.max_attempts
        return self.max_attempts

    def fingerprint(self, payload: dict[str, Any]) -> str:
        """What identifies the request for idempotent repeats: the body, the payload as
        stored, without the key itself."""
        data = self.model_dump(mode="json", exclude={"idempotency_key"})
        data["payload"] = payload
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def new_task(
        self,
        payload: dict[str, Any],
        *,
        max_attempts: int,
        timeout_s: float,
        payload_json: str | None = None,
    ) -> NewTask:
        """The task to insert, with ``payload`` as validated by its action and the given
        defaults for what the body leaves out."""
        return NewTask(
            action=self.action,
            payload=payload,
            run_at=self.run_at,
            delay_s=self.delay_s,
            queue=self.queue,
            priority=self.priority,
            max_attempts=self.wanted_attempts or max_attempts,
            retry_base_s=self.retry.base_s if self.retry is not None else None,
            retry_cap_s=self.retry.cap_s if self.retry is not None else None,
            timeout_s=self.timeout_s or timeout_s,
            idempotency_key=self.idempotency_key,
            metadata=self.metadata,
            depends_on=tuple(self.depends_on),
            request_hash=self.fingerprint(payload) if self.idempotency_key else None,
            payload_json=payload_json,
        )


_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# A JSON escape of NUL (\\u0000), not an escaped backslash followed by "u0000".
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def storable_json(value: Any, limit: int) -> tuple[str, str | None]:
    """``value`` as JSON text, and what keeps PostgreSQL from storing it, if anything."""
    text = _COMPACT.encode(value)
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        return text, "must not contain NUL characters (\\u0000)"
    try:
        size = len(text.encode())
    except UnicodeEncodeError:
        return text, "contains a lone surrogate (\\ud800-\\udfff): not valid Unicode"
    if size > limit:
        return text, f"larger than {limit} bytes as JSON"
    return text, None


class CreateTaskBatch(BaseModel):
    """Body of POST /v1/tasks/batch: all tasks are created, or none."""

    model_config = ConfigDict(extra="forbid")

    tasks: list[CreateTask] = Field(
        min_length=1,
        max_length=MAX_BATCH,
        description=f"1 to {MAX_BATCH} task bodies, each as for POST /v1/tasks",
    )


_SPACE_OFFSET = re.compile(r" (\d{2}:?\d{2})$")


def _plus_offset(value: Any) -> Any:
    """An unencoded '+' in a query string arrives as a space: restore the offset."""
    if isinstance(value, str):
        return _SPACE_OFFSET.sub(r"+\1", value)
    return value


class ListTasksQuery(BaseModel):
    """Query parameters of GET /v1/tasks."""

    model_config = ConfigDict(extra="forbid")

    status: list[TaskStatus] = Field(
        default_factory=list, description="repeat or separate with commas"
    )
    action: str | None = Field(default=None, max_length=100, pattern=NAME_PATTERN)
    queue: str | None = Field(default=None, max_length=100, pattern=NAME_PATTERN)
    schedule_id: uuid.UUID | None = None
    q: Text | None = Field(
        default=None,
        max_length=200,
        description="search: the task with this id (when it is a UUID), and the tasks whose "
        "idempotency_key is this text or starts with it",
    )
    created_after: Instant | None = None
    created_before: Instant | None = None
    run_after: Instant | None = None
    run_before: Instant | None = None
    limit: int = Field(default=DEFAULT_LIST_LIMIT, ge=1, le=MAX_LIST_LIMIT)
    cursor: str | None = Field(default=None, max_length=200, description="next_cursor of a page")

    @field_validator("status", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            return [p.strip() for v in value for p in str(v).split(",") if p.strip()]
        return value

    @field_validator("created_after", "created_before", "run_after", "run_before", mode="before")
    @classmethod
    def _offset(cls, value: Any) -> Any:
        return _plus_offset(value)

    @field_validator("action", "queue", "cursor", "q", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return value or None


class TaskOut(BaseModel):
    id: uuid.UUID
    action: str
    payload: dict[str, Any]
    queue: str
    priority: int
    status: TaskStatus
    run_at: datetime
    attempts: int
    max_attempts: int
    retry_base_s: float | None = Field(
        default=None,
        description="the task's own retry.base_s (null: its queue's, else the daemon's)",
    )
    retry_cap_s: float | None = Field(
        default=None,
        description="the task's own retry.cap_s (null: its queue's, else the daemon's)",
    )
    timeout_s: float
    idempotency_key: str | None
    metadata: dict[str, Any]
    depends_on: list[uuid.UUID]
    schedule_id: uuid.UUID | None
    scheduled_for: datetime | None
    parent_task_id: uuid.UUID | None
    lease_owner: str | None
    lease_expires_at: datetime | None
    last_error: str | None = Field(
        description="the error of the latest failed attempt while the task is retried or "
        "failed; null once it completed (every attempt's error stays in its attempts)"
    )
    result: Any
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    no_capable_worker: bool | None = Field(
        default=None,
        description="true in GET /v1/tasks/{id} of a scheduled or waiting task that no running "
        "daemon can run (its action is loaded nowhere): it waits for one that can; else null",
    )

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        # Built from a stored task, already valid: skip validation (a hot path for batches).
        return cls.model_construct(
            id=task.id,
            action=task.action,
            payload=task.payload,
            queue=task.queue,
            priority=task.priority,
            status=task.status,
            run_at=task.run_at,
            attempts=task.attempts,
            max_attempts=task.max_attempts,
            retry_base_s=task.retry_base_s,
            retry_cap_s=task.retry_cap_s,
            timeout_s=task.timeout_s,
            idempotency_key=task.idempotency_key,
            metadata=task.metadata,
            depends_on=list(task.depends_on),
            schedule_id=task.schedule_id,
            scheduled_for=task.scheduled_for,
            parent_task_id=task.parent_task_id,
            lease_owner=task.lease_owner,
            lease_expires_at=task.lease_expires_at,
            last_error=task.last_error,
            result=task.result,
            created_at=task.created_at,
            updated_at=task.updated_at,
            started_at=task.started_at,
            finished_at=task.finished_at,
            no_capable_worker=task.no_capable_worker,
        )


class TaskList(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class BatchCreated(BaseModel):
    items: list[TaskOut] = Field(description="in the order of the request")
    created: int = Field(description="how many were new (the rest are idempotent repeats)")


class AttemptOut(BaseModel):
    task_id: uuid.UUID
    number: int
    worker: str
    outcome: Literal["succeeded", "failed", "timed_out", "lost"]
    started_at: datetime
    finished_at: datetime
    duration_ms: float | None
    error: str | None
    output: str | None

    @classmethod
    def of(cls, attempt: Attempt) -> AttemptOut:
        return cls(
            task_id=attempt.task_id,
            number=attempt.number,
            worker=attempt.worker,
            outcome=attempt.outcome.value,
            started_at=attempt.started_at,
            finished_at=attempt.finished_at,
            duration_ms=attempt.duration_ms,
            error=attempt.error,
            output=attempt.output,
        )


class AttemptList(BaseModel):
    items: list[AttemptOut]


class FieldProblem(BaseModel):
    field: str = Field(description="the offending field, e.g. payload.url or tasks[3].run_at")
    message: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldProblem] | None = None


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready", "unavailable"]
    reasons: list[str] | None = None
