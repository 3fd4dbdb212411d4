"""Schedules: a recurrence rule, a task template and the policies that turn occurrences into
tasks. Pure code: planning an expansion needs no I/O."""

from __future__ import annotations

import enum
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from scheduler_daemon.domain.backoff import DEFAULT_MAX_ATTEMPTS
from scheduler_daemon.domain.models import NewTask
from scheduler_daemon.domain.recurrence import (
    Blackout,
    DailyWindow,
    Exclusions,
    Recurrence,
    occurrences,
)


class MisfirePolicy(enum.StrEnum):
    SKIP = "skip"  # resume at the next future occurrence
    RUN_ONCE = "run_once"  # one catch-up run now, then the future ones
    RUN_ALL = "run_all"  # every missed occurrence (up to max_catchup), then the future ones


class OverlapPolicy(enum.StrEnum):
    ALLOW = "allow"
    SKIP = "skip"  # no new occurrence while the previous one is scheduled or running
    CANCEL_PREVIOUS = "cancel_previous"  # a new occurrence cancels a previous one not started


@dataclass(frozen=True, slots=True)
class TaskTemplate:
    action: str
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str = "default"
    priority: int = 0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout_s: float = 30.0
    metadata: dict[str, Any] = field(default_factory=dict)
    retry_base_s: float | None = None  # None: the queue's, else the daemon's
    retry_cap_s: float | None = None


@dataclass(frozen=True, slots=True)
class Schedule:
    id: uuid.UUID
    name: str
    recurrence: Recurrence
    template: TaskTemplate
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    misfire_grace_s: float = 60.0
    max_catchup: int = 100
    overlap_policy: OverlapPolicy = OverlapPolicy.ALLOW
    jitter_s: float = 0.0
    paused: bool = False
    metadata: dict[str, Any] = field(default_factory=dict)
    next_run_at: datetime | None = None
    expand_at: datetime | None = None
    last_task_id: uuid.UUID | None = None
    from_task: bool = False
    created_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(slots=True)
class Expansion:
    """What one expansion pass does for one schedule."""

    schedule_id: uuid.UUID
    tasks: list[NewTask]
    next_run_at: datetime | None
    expand_at: datetime | None
    last_task_id: uuid.UUID | None
    cancel_previous: bool = False
    missed: int = 0  # occurrences later than misfire_grace_s
    skipped: int = 0  # occurrences dropped by a policy


def expand_at(
    overlap_policy: OverlapPolicy, next_run_at: datetime | None, horizon_s: float
) -> datetime | None:
    """When the expander should next look at a schedule: ``horizon_s`` before the occurrence
    (tasks are made ahead), or at it exactly when an overlap policy must see the moment."""
    if next_run_at is None:
        return None
    if overlap_policy is OverlapPolicy.ALLOW:
        return next_run_at - timedelta(seconds=horizon_s)
    return next_run_at


# A bound on how many missed occurrences one pass walks through (a schedule every second
# that was paused for a week); what lies beyond is skipped as missed.
MAX_MISSED_SCAN = 100_000


def plan_expansion(
    schedule: Schedule,
    *,
    now: datetime,
    horizon_s: float,
    busy: bool = False,
    rng: random.Random | None = None,
) -> Expansion:
    """Occurrences from ``schedule.next_run_at`` up to ``now + horizon_s`` (up to ``now`` with an
    overlap policy) as tasks, after the misfire and overlap policies.

    ``busy``: an earlier occurrence of this schedule is still scheduled or running.
    """
    rule = schedule.recurrence
    start = schedule.next_run_at
    result = Expansion(schedule.id, [], None, None, schedule.last_task_id)
    if start is None:
        return result
    allow = schedule.overlap_policy is OverlapPolicy.ALLOW
    limit = now + timedelta(seconds=horizon_s) if allow else now
    missed_before = now - timedelta(seconds=schedule.misfire_grace_s)

    keep_missed: deque[datetime] = deque(
        maxlen=schedule.max_catchup if schedule.misfire_policy is MisfirePolicy.RUN_ALL else 1
    )
    due: list[tuple[datetime, datetime]] = []  # (scheduled_for, run_at)
    next_run_at: datetime | None = None
    for occurrence in _walk(rule, start, missed_before):
        if occurrence > limit:
            next_run_at = occurrence
            break
        if occurrence < missed_before:
            result.missed += 1
            keep_missed.append(occurrence)
            continue
        due.append((occurrence, _jittered(occurrence, schedule.jitter_s, rng)))
    else:
        next_run_at = None  # the rule ended

    if result.missed:
        if schedule.misfire_policy is MisfirePolicy.SKIP:
            result.skipped += result.missed
        else:
            result.skipped += result.missed - len(keep_missed)
            due[:0] = [(occurrence, now) for occurrence in keep_missed]
    if not allow and due:
        due = _one_at_a_time(schedule, due, busy, result)

    parent = schedule.last_task_id
    for scheduled_for, run_at in due:
        task = _task(schedule, scheduled_for, run_at, parent)
        result.tasks.append(task)
        parent = task.id
    result.last_task_id = parent
    result.next_run_at = next_run_at
    result.expand_at = expand_at(schedule.overlap_policy, next_run_at, horizon_s)
    return result


def _one_at_a_time(
    schedule: Schedule, due: list[tuple[datetime, datetime]], busy: bool, result: Expansion
) -> list[tuple[datetime, datetime]]:
    """An overlap policy other than allow: the newest due occurrence stands for all of them,
    and with an earlier one still pending (``busy``) it is skipped or replaces that one."""
    result.skipped += len(due) - 1
    if busy and schedule.overlap_policy is OverlapPolicy.SKIP:
        result.skipped += 1
        return []
    if busy:
        result.cancel_previous = True
    return due[-1:]


def _walk(rule: Recurrence, start: datetime, missed_before: datetime) -> Iterator[datetime]:
    """The rule's occurrences from ``start``; past MAX_MISSED_SCAN missed ones, jump to the
    first that is not missed (the ones in between count as skipped, not one by one)."""
    scanned = 0
    for occurrence in occurrences(rule, start, inclusive=True):
        if occurrence < missed_before:
            scanned += 1
            if scanned > MAX_MISSED_SCAN:
                yield from occurrences(rule, missed_before, inclusive=True)
                return
        yield occurrence


def _jittered(occurrence: datetime, jitter_s: float, rng: random.Random | None) -> datetime:
    if jitter_s <= 0:
        return occurrence
    return occurrence + timedelta(seconds=(rng or random).uniform(0.0, jitter_s))


def _task(
    schedule: Schedule, scheduled_for: datetime, run_at: datetime, parent: uuid.UUID | None
) -> NewTask:
    t = schedule.template
    return NewTask(
        action=t.action,
        payload=t.payload,
        run_at=run_at,
        queue=t.queue,
        priority=t.priority,
        max_attempts=t.max_attempts,
        retry_base_s=t.retry_base_s,
        retry_cap_s=t.retry_cap_s,
        timeout_s=t.timeout_s,
        metadata=t.metadata,
        schedule_id=schedule.id,
        scheduled_for=scheduled_for,
        parent_task_id=parent,
    )


# -- JSON forms (what the store keeps in jsonb) --------------------------------------------


def rule_to_json(rule: Recurrence) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if rule.cron is not None:
        out["cron"] = rule.cron
    if rule.interval_s is not None:
        out["interval_s"] = rule.interval_s
    if rule.preset is not None:
        out["preset"] = rule.preset
    if rule.at is not None:
        out["at"] = rule.at.isoformat()
    if rule.weekday is not None:
        out["weekday"] = rule.weekday
    if rule.day_of_month is not None:
        out["day_of_month"] = rule.day_of_month
    if rule.anchor is not None:
        out["anchor"] = rule.anchor.isoformat()
    return out


def exclusions_to_json(exclusions: Exclusions) -> dict[str, Any]:
    return {
        "windows": [
            {"start": w.start.isoformat(), "end": w.end.isoformat()} for w in exclusions.windows
        ],
        "daily": [
            {"start": w.start.isoformat(), "end": w.end.isoformat()} for w in exclusions.daily
        ],
        "dates": [d.isoformat() for d in exclusions.dates],
    }


def recurrence_from_json(
    rule: dict[str, Any],
    timezone: str,
    start_at: datetime | None,
    end_at: datetime | None,
    exclusions: dict[str, Any],
) -> Recurrence:
    return Recurrence(
        cron=rule.get("cron"),
        interval_s=rule.get("interval_s"),
        preset=rule.get("preset"),
        at=time.fromisoformat(rule["at"]) if rule.get("at") else None,
        weekday=rule.get("weekday"),
        day_of_month=rule.get("day_of_month"),
        anchor=_instant(rule["anchor"]) if rule.get("anchor") else None,
        timezone=timezone,
        start_at=start_at,
        end_at=end_at,
        exclusions=Exclusions(
            windows=tuple(
                Blackout(_instant(w["start"]), _instant(w["end"]))
                for w in exclusions.get("windows", [])
            ),
            daily=tuple(
                DailyWindow(time.fromisoformat(w["start"]), time.fromisoformat(w["end"]))
                for w in exclusions.get("daily", [])
            ),
            dates=tuple(date.fromisoformat(d) for d in exclusions.get("dates", [])),
        ),
    )


def template_to_json(template: TaskTemplate) -> dict[str, Any]:
    return {
        "action": template.action,
        "payload": template.payload,
        "queue": template.queue,
        "priority": template.priority,
        "max_attempts": template.max_attempts,
        "timeout_s": template.timeout_s,
        "metadata": template.metadata,
        "retry_base_s": template.retry_base_s,
        "retry_cap_s": template.retry_cap_s,
    }


def template_from_json(data: dict[str, Any]) -> TaskTemplate:
    return TaskTemplate(
        action=data["action"],
        payload=data.get("payload", {}),
        queue=data.get("queue", "default"),
        priority=data.get("priority", 0),
        max_attempts=data.get("max_attempts", 3),
        timeout_s=data.get("timeout_s", 30.0),
        metadata=data.get("metadata", {}),
        retry_base_s=data.get("retry_base_s"),
        retry_cap_s=data.get("retry_cap_s"),
    )


def _instant(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
