"""Schedule request and response models."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scheduler_daemon.api.schemas import NAME_PATTERN, Instant, RetryPolicy, check_attempts
from scheduler_daemon.domain.describe import describe
from scheduler_daemon.domain.schedules import MisfirePolicy, OverlapPolicy, Schedule

SCHEDULE_NAME = r"^[A-Za-z0-9_.:/-]+$"
DESCRIPTION = (
    "read-only: the rule in words, e.g. 'every Monday at 09:00 Europe/Oslo' "
    "('cron <expr> (<zone>)' for a cron expression not put in words)"
)


class TaskTemplateIn(BaseModel):
    """The task each occurrence creates (validated like a task)."""

    model_config = ConfigDict(extra="forbid")

    action: str = Field(min_length=1, max_length=100, pattern=NAME_PATTERN)
    payload: dict[str, Any] = Field(default_factory=dict)
    queue: str = Field(default="default", min_length=1, max_length=100, pattern=NAME_PATTERN)
    priority: int = Field(default=0, ge=-1000, le=1000)
    max_attempts: int | None = Field(default=None, ge=1, le=100)
    retry: RetryPolicy | None = Field(
        default=None, description="each occurrence's retry policy, as for a task"
    )
    timeout_s: float | None = Field(default=None, gt=0, le=24 * 3600)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_max_attempts(self) -> TaskTemplateIn:
        check_attempts(self.max_attempts, self.retry)
        return self


class BlackoutIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: Instant
    end: Instant

    @model_validator(mode="after")
    def _ordered(self) -> BlackoutIn:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class DailyWindowIn(BaseModel):
    """A local-time window every day, e.g. 01:00-03:00; an end before the start wraps past
    midnight."""

    model_config = ConfigDict(extra="forbid")

    start: time
    end: time

    @field_validator("start", "end")
    @classmethod
    def _naive(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("a local time of day, without an offset")
        return value


class ExclusionsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    windows: list[BlackoutIn] = Field(default_factory=list, max_length=100)
    daily: list[DailyWindowIn] = Field(default_factory=list, max_length=24)
    dates: list[date] = Field(
        default_factory=list, max_length=1000, description="local dates without occurrences"
    )


class ScheduleFields(BaseModel):
    """What a schedule is made of; every field optional (PATCH)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=SCHEDULE_NAME)
    cron: str | None = Field(
        default=None, max_length=200, description="5 fields, or 6 with seconds first"
    )
    interval_s: float | None = Field(default=None, ge=1, le=366 * 24 * 3600)
    preset: Literal["hourly", "daily", "weekly", "monthly"] | None = None
    at: time | None = Field(default=None, description="presets: the local time of day")
    weekday: int | None = Field(default=None, ge=0, le=6, description="weekly: 0 = Monday")
    day_of_month: int | None = Field(default=None, ge=1, le=31, description="monthly")
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    task: TaskTemplateIn | None = None
    start_at: Instant | None = None
    end_at: Instant | None = None
    paused: bool | None = None
    exclusions: ExclusionsIn | None = None
    misfire_policy: MisfirePolicy | None = None
    misfire_grace_s: float | None = Field(default=None, ge=0, le=7 * 24 * 3600)
    max_catchup: int | None = Field(default=None, ge=1, le=10_000)
    overlap_policy: OverlapPolicy | None = None
    jitter_s: float | None = Field(default=None, ge=0, le=3600)
    metadata: dict[str, Any] | None = None


class ScheduleIn(ScheduleFields):
    """Body of POST /v1/schedules: a name, exactly one rule (cron, interval_s or preset), a
    task template, and the options."""

    name: str = Field(min_length=1, max_length=200, pattern=SCHEDULE_NAME)
    task: TaskTemplateIn
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    paused: bool = False
    exclusions: ExclusionsIn = Field(default_factory=ExclusionsIn)
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    misfire_grace_s: float = Field(default=60.0, ge=0, le=7 * 24 * 3600)
    max_catchup: int = Field(default=100, ge=1, le=10_000)
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    jitter_s: float = Field(default=0.0, ge=0, le=3600)
    metadata: dict[str, Any] = Field(default_factory=dict)


class SchedulePatch(ScheduleFields):
    """Body of PATCH /v1/schedules/{id}: the fields to change. Setting a rule field replaces
    the rule (the other rule fields are cleared)."""


class TaskTemplateOut(BaseModel):
    action: str
    payload: dict[str, Any]
    queue: str
    priority: int
    max_attempts: int
    retry_base_s: float | None = Field(default=None, description="null: the queue's or [retry]'s")
    retry_cap_s: float | None = Field(default=None, description="null: the queue's or [retry]'s")
    timeout_s: float
    metadata: dict[str, Any]


class ScheduleOut(BaseModel):
    id: uuid.UUID
    name: str
    cron: str | None
    interval_s: float | None
    preset: Literal["hourly", "daily", "weekly", "monthly"] | None
    at: time | None
    weekday: int | None
    day_of_month: int | None
    timezone: str
    task: TaskTemplateOut
    start_at: datetime | None
    end_at: datetime | None
    paused: bool
    exclusions: ExclusionsIn
    misfire_policy: MisfirePolicy
    misfire_grace_s: float
    max_catchup: int
    overlap_policy: OverlapPolicy
    jitter_s: float
    metadata: dict[str, Any]
    next_run_at: datetime | None = Field(description="the next occurrence not yet made a task")
    created_at: datetime | None
    updated_at: datetime | None
    description: str = Field(default="", description=DESCRIPTION)

    @classmethod
    def of(cls, s: Schedule) -> ScheduleOut:
        r = s.recurrence
        t = s.template
        return cls(
            id=s.id,
            name=s.name,
            cron=r.cron,
            interval_s=r.interval_s,
            preset=r.preset,
            at=r.at,
            weekday=r.weekday,
            day_of_month=r.day_of_month,
            timezone=r.timezone,
            task=TaskTemplateOut(
                action=t.action,
                payload=t.payload,
                queue=t.queue,
                priority=t.priority,
                max_attempts=t.max_attempts,
                retry_base_s=t.retry_base_s,
                retry_cap_s=t.retry_cap_s,
                timeout_s=t.timeout_s,
                metadata=t.metadata,
            ),
            start_at=r.start_at,
            end_at=r.end_at,
            paused=s.paused,
            exclusions=ExclusionsIn(
                windows=[BlackoutIn(start=w.start, end=w.end) for w in r.exclusions.windows],
                daily=[DailyWindowIn(start=w.start, end=w.end) for w in r.exclusions.daily],
                dates=list(r.exclusions.dates),
            ),
            misfire_policy=s.misfire_policy,
            misfire_grace_s=s.misfire_grace_s,
            max_catchup=s.max_catchup,
            overlap_policy=s.overlap_policy,
            jitter_s=s.jitter_s,
            metadata=s.metadata,
            next_run_at=s.next_run_at,
            created_at=s.created_at,
            updated_at=s.updated_at,
            description=describe(r),
        )


class ScheduleList(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None


class Occurrence(BaseModel):
    utc: datetime
    local: datetime = Field(description="the same instant in the schedule's zone")


class SchedulePreview(BaseModel):
    timezone: str
    occurrences: list[Occurrence]
    description: str = Field(default="", description=DESCRIPTION)


class ListSchedulesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    paused: bool | None = None
    name: str | None = Field(
        default=None, max_length=200, pattern=SCHEDULE_NAME, description="a name prefix"
    )
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)

    @field_validator("name", "cursor", mode="before")
    @classmethod
    def _blank(cls, value: Any) -> Any:
        return value or None


class PreviewQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=5, ge=1, le=100)


class ScheduleTasksQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = Field(default=None, max_length=200)
