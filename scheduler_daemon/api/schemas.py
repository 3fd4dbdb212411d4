"""Request and response models: the same pydantic models validate requests and describe them."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    model_validator,
)

from scheduler_daemon.domain.models import Attempt, Task

MAX_DELAY_S = 366 * 24 * 3600


class CreateTask(BaseModel):
    """Body of POST /v1/tasks."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    action: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
    payload: dict[str, Any] = Field(default_factory=dict)
    run_at: AwareDatetime | None = Field(
        default=None, validation_alias=AliasChoices("run_at", "runAt", "executeAt")
    )
    delay_s: float | None = Field(default=None, ge=0, le=MAX_DELAY_S)
    queue: str = Field(default="default", min_length=1, max_length=100)
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    timeout_s: float | None = Field(default=None, gt=0, le=24 * 3600)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    metadata: dict[str, Any] = Field(default_factory=dict)

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
        return self


class TaskOut(BaseModel):
    id: uuid.UUID
    action: str
    payload: dict[str, Any]
    queue: str
    priority: int
    status: str
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

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        return cls(
            id=task.id,
            action=task.action,
            payload=task.payload,
            queue=task.queue,
            priority=task.priority,
            status=task.status.value,
            run_at=task.run_at,
            attempts=task.attempts,
            max_attempts=task.max_attempts,
            timeout_s=task.timeout_s,
            idempotency_key=task.idempotency_key,
            metadata=task.metadata,
            lease_owner=task.lease_owner,
            lease_expires_at=task.lease_expires_at,
            last_error=task.last_error,
            result=task.result,
            created_at=task.created_at,
            updated_at=task.updated_at,
            started_at=task.started_at,
            finished_at=task.finished_at,
        )


class TaskList(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    task_id: uuid.UUID
    number: int
    worker: str
    outcome: str
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
