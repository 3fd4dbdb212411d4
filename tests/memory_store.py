"""An in-memory store that behaves like ``PostgresStore`` for what the engine uses.

The contract suite (``tests/contract/``) runs the same tests against this store and against
PostgreSQL, so what the unit tests of the engine's loops assume of a store is what the database
does: claim order, leases fenced by (owner, attempt), retries, releases, rescues. A storage
layout change that alters one of those answers fails the suite on PostgreSQL first.

Time is the wall clock, as the database's ``now()`` is: tests schedule with delays
(``delay_s``) and leases that are already over (a negative ``lease_s``), never with sleeps.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler_daemon.domain.models import (
    Attempt,
    AttemptResult,
    ClaimedTask,
    NewTask,
    Outcome,
    Task,
    TaskStatus,
)
from scheduler_daemon.store.base import Rescued


@dataclass(slots=True)
class _Row:
    new: NewTask
    run_at: datetime
    created_at: datetime
    status: TaskStatus = TaskStatus.SCHEDULED
    attempts: int = 0
    series_start: int = 0
    lease_owner: str | None = None
    lease_expires_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    updated_at: datetime | None = None
    last_error: str | None = None
    result: Any = None
    attempt_rows: list[Attempt] = field(default_factory=list)


class MemoryStore:
    """``EngineStore`` plus the few ``TaskStore`` reads the contract tests look through."""

    def __init__(self, now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._now = now
        self._rows: dict[uuid.UUID, _Row] = {}
        self.paused: set[str] = set()

    # --- creating and reading ------------------------------------------------------------

    async def create_task(self, task: NewTask) -> tuple[Task, bool]:
        now = self._now()
        run_at = task.run_at or now + timedelta(seconds=task.delay_s or 0.0)
        row = _Row(task, run_at=run_at, created_at=now, updated_at=now)
        self._rows[task.id] = row
        return _task(row), True

    async def get_task(self, task_id: uuid.UUID) -> Task | None:
        row = self._rows.get(task_id)
        return None if row is None else _task(row)

    async def list_attempts(self, task_id: uuid.UUID) -> list[Attempt]:
        row = self._rows.get(task_id)
        return [] if row is None else list(row.attempt_rows)

    # --- the EngineStore protocol ----------------------------------------------------------

    async def claim(
        self, owner: str, limit: int, lease_s: float, exclude: Sequence[str] = ()
    ) -> list[ClaimedTask]:
        left_out = {*exclude, *self.paused}
        return self._take(owner, limit, lease_s, lambda r: r.new.queue not in left_out)

    async def claim_queue(
        self, owner: str, queue: str, limit: int, lease_s: float, global_limit: int | None
    ) -> list[ClaimedTask]:
        if queue in self.paused:
            return []
        if global_limit is not None:
            now = self._now()
            running = sum(
                1
                for r in self._rows.values()
                if r.status is TaskStatus.RUNNING
                and r.new.queue == queue
                and r.lease_expires_at is not None
                and r.lease_expires_at > now
            )
            limit = max(min(limit, global_limit - running), 0)
        return self._take(owner, limit, lease_s, lambda r: r.new.queue == queue)

    def _take(
        self, owner: str, limit: int, lease_s: float, wanted: Callable[[_Row], bool]
    ) -> list[ClaimedTask]:
        now = self._now()
        due = sorted(
            (
                r
                for r in self._rows.values()
                if r.status is TaskStatus.SCHEDULED and r.run_at <= now and wanted(r)
            ),
            key=lambda r: (-r.new.priority, r.run_at, r.new.id),
        )[: max(limit, 0)]
        for row in due:
            row.status = TaskStatus.RUNNING
            row.attempts += 1
            row.lease_owner = owner
            row.lease_expires_at = now + timedelta(seconds=lease_s)
            row.started_at = row.updated_at = now
        return [_claimed(row, now) for row in due]

    async def next_due_in(self, exclude: Sequence[str] = ()) -> float | None:
        runs = [
            r.run_at
            for r in self._rows.values()
            if r.status is TaskStatus.SCHEDULED and r.new.queue not in exclude
        ]
        return None if not runs else (min(runs) - self._now()).total_seconds()

    async def paused_queues(self) -> frozenset[str]:
        return frozenset(self.paused)

    async def complete(self, owner: str, results: Sequence[AttemptResult]) -> set[uuid.UUID]:
        now = self._now()
        applied: set[uuid.UUID] = set()
        for result in results:
            row = self._held(owner, result.task_id, result.attempt)
            if row is None:
                continue
            row.status = result.next_status
            if result.next_status is TaskStatus.SCHEDULED:
                row.run_at = now + timedelta(seconds=result.retry_in_s or 0.0)
            row.lease_owner = row.lease_expires_at = None
            succeeded = result.outcome is Outcome.SUCCEEDED
            row.last_error = None if succeeded else result.error
            if succeeded:
                row.result = result.result
            row.finished_at = now if result.next_status.finished else None
            row.updated_at = now
            row.attempt_rows.append(
                Attempt(
                    task_id=result.task_id,
                    number=result.attempt,
                    worker=owner,
                    outcome=result.outcome,
                    started_at=row.started_at or now,
                    finished_at=now,
                    duration_ms=result.duration_ms,
                    error=result.error,
                    output=result.output,
                )
            )
            applied.add(result.task_id)
        return applied

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[uuid.UUID, int]], lease_s: float
    ) -> set[tuple[uuid.UUID, int]]:
        until = self._now() + timedelta(seconds=lease_s)
        kept: set[tuple[uuid.UUID, int]] = set()
        for task_id, attempt in held:
            row = self._held(owner, task_id, attempt)
            if row is not None:
                row.lease_expires_at = until
                kept.add((task_id, attempt))
        return kept

    async def release(self, owner: str, held: Sequence[tuple[uuid.UUID, int]]) -> set[uuid.UUID]:
        released: set[uuid.UUID] = set()
        for task_id, attempt in held:
            row = self._held(owner, task_id, attempt)
            if row is None:
                continue
            row.status = TaskStatus.SCHEDULED
            row.attempts -= 1
            row.lease_owner = row.lease_expires_at = None
            row.updated_at = self._now()
            released.add(task_id)
        return released

    async def rescue_expired(self, limit: int) -> list[Rescued]:
        now = self._now()
        expired = sorted(
            (
                r
                for r in self._rows.values()
                if r.status is TaskStatus.RUNNING
                and r.lease_expires_at is not None
                and r.lease_expires_at < now
            ),
            key=lambda r: r.lease_expires_at or now,
        )[:limit]
        rescued: list[Rescued] = []
        for row in expired:
            owner = row.lease_owner or ""
            used_up = row.attempts - row.series_start >= row.new.max_attempts
            row.status = TaskStatus.FAILED if used_up else TaskStatus.SCHEDULED
            if not used_up:
                row.run_at = now
            row.finished_at = now if used_up else None
            row.last_error = f"lease expired: worker {owner} stopped renewing it"
            row.lease_owner = row.lease_expires_at = None
            row.updated_at = now
            if row.attempts >= 1:
                row.attempt_rows.append(
                    Attempt(
                        task_id=row.new.id,
                        number=row.attempts,
                        worker=owner,
                        outcome=Outcome.LOST,
                        started_at=row.started_at or now,
                        finished_at=now,
                        duration_ms=None,
                        error="lease expired",
                        output=None,
                    )
                )
            rescued.append(
                Rescued(row.new.id, row.status, row.attempts, owner, row.new.action, row.new.queue)
            )
        return rescued

    def _held(self, owner: str, task_id: uuid.UUID, attempt: int) -> _Row | None:
        """The row while ``owner`` holds its lease for ``attempt`` (the fence)."""
        row = self._rows.get(task_id)
        if (
            row is None
            or row.status is not TaskStatus.RUNNING
            or row.lease_owner != owner
            or row.attempts != attempt
        ):
            return None
        return row


def _claimed(row: _Row, now: datetime) -> ClaimedTask:
    new = row.new
    return ClaimedTask(
        id=new.id,
        action=new.action,
        payload=new.payload,
        attempt=row.attempts,
        max_attempts=new.max_attempts,
        timeout_s=new.timeout_s,
        run_at=row.run_at,
        series_start=row.series_start,
        queue=new.queue,
        claimed_at=now,
        retry_base_s=new.retry_base_s,
        retry_cap_s=new.retry_cap_s,
    )


def _task(row: _Row) -> Task:
    new = row.new
    return Task(
        id=new.id,
        action=new.action,
        payload=new.payload,
        queue=new.queue,
        priority=new.priority,
        status=row.status,
        run_at=row.run_at,
        attempts=row.attempts,
        max_attempts=new.max_attempts,
        timeout_s=new.timeout_s,
        idempotency_key=new.idempotency_key,
        metadata=new.metadata,
        lease_owner=row.lease_owner,
        lease_expires_at=row.lease_expires_at,
        last_error=row.last_error,
        result=row.result,
        created_at=row.created_at,
        updated_at=row.updated_at or row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        retry_base_s=new.retry_base_s,
        retry_cap_s=new.retry_cap_s,
    )
