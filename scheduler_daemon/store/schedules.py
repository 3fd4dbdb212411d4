"""Schedules in PostgreSQL: CRUD for the API, and the expander's batched claim-and-expand."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from scheduler_daemon.domain.models import NewTask, Task
from scheduler_daemon.domain.schedules import (
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
    exclusions_to_json,
    recurrence_from_json,
    rule_to_json,
    template_from_json,
    template_to_json,
)
from scheduler_daemon.store import queries
from scheduler_daemon.store.base import ExpansionPass, Planner, SchedulePage
from scheduler_daemon.store.postgres import (
    _insert_args,
    decode_cursor,
    encode_cursor,
    insert_tasks,
)


class ScheduleNameTaken(Exception):
    def __init__(self, name: str) -> None:
        super().__init__(f"a schedule named {name!r} exists already")
        self.name = name


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _schedule(row: asyncpg.Record) -> Schedule:
    return Schedule(
        id=row["id"],
        name=row["name"],
        recurrence=recurrence_from_json(
            _json(row["rule"]),
            row["timezone"],
            row["start_at"],
            row["end_at"],
            _json(row["exclusions"]),
        ),
        template=template_from_json(_json(row["template"])),
        misfire_policy=MisfirePolicy(row["misfire_policy"]),
        misfire_grace_s=row["misfire_grace_s"],
        max_catchup=row["max_catchup"],
        overlap_policy=OverlapPolicy(row["overlap_policy"]),
        jitter_s=row["jitter_s"],
        paused=row["paused"],
        metadata=_json(row["metadata"]),
        next_run_at=row["next_run_at"],
        expand_at=row["expand_at"],
        last_task_id=row["last_task_id"],
        from_task=row["from_task"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _row_args(s: Schedule) -> list[Any]:
    r = s.recurrence
    return [
        s.name,
        rule_to_json(r),
        r.timezone,
        template_to_json(s.template),
        r.start_at,
        r.end_at,
        exclusions_to_json(r.exclusions),
        s.misfire_policy.value,
        s.misfire_grace_s,
        s.max_catchup,
        s.overlap_policy.value,
        s.jitter_s,
        s.paused,
        s.metadata,
        s.next_run_at,
        s.expand_at,
    ]


class PostgresScheduleStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def create_schedule(
        self, schedule: Schedule, first_task: NewTask | None = None
    ) -> tuple[Schedule, Task | None]:
        """Insert a schedule (and, for a task's recurrence, the task that is its first
        occurrence) in one transaction."""
        async with self.pool.acquire() as conn, conn.transaction():
            try:
                row = await conn.fetchrow(
                    queries.INSERT_SCHEDULE,
                    schedule.id,
                    *_row_args(schedule),
                    schedule.last_task_id,
                    schedule.from_task,
                )
            except asyncpg.UniqueViolationError:
                raise ScheduleNameTaken(schedule.name) from None
            assert row is not None
            task = None
            if first_task is not None:
                [(task, _)] = await insert_tasks(conn, [first_task])
        return _schedule(row), task

    async def get_schedule(self, schedule_id: uuid.UUID) -> Schedule | None:
        row = await self.pool.fetchrow(queries.GET_SCHEDULE, schedule_id)
        return _schedule(row) if row is not None else None

    async def update_schedule(
        self, schedule_id: uuid.UUID, change: Callable[[Schedule], Schedule]
    ) -> Schedule | None:
        """Read the schedule locked, apply ``change`` (which validates and recomputes the next
        run), write it back; None when there is no such schedule."""
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(queries.GET_SCHEDULE_FOR_UPDATE, schedule_id)
            if row is None:
                return None
            current = _schedule(row)
            updated = change(current)
            if updated.recurrence != current.recurrence:
                # The rule changed: occurrences made ahead under the old one are taken back.
                await conn.execute(queries.TAKE_BACK_OCCURRENCES, schedule_id)
            try:
                new = await conn.fetchrow(queries.UPDATE_SCHEDULE, schedule_id, *_row_args(updated))
            except asyncpg.UniqueViolationError:
                raise ScheduleNameTaken(updated.name) from None
        assert new is not None
        return _schedule(new)

    async def set_paused(self, schedule_id: uuid.UUID, paused: bool) -> Schedule | None:
        """Pause (no new occurrences; those made ahead and not started are taken back) or
        resume (the expander looks at once; the misfire policy handles what was missed)."""
        async with self.pool.acquire() as conn, conn.transaction():
            if paused:
                await self._take_back(conn, schedule_id)
            row = await conn.fetchrow(queries.SET_PAUSED, schedule_id, paused)
        return _schedule(row) if row is not None else None

    @staticmethod
    async def _take_back(conn: asyncpg.pool.PoolConnectionProxy, schedule_id: uuid.UUID) -> None:
        rows = await conn.fetch(queries.TAKE_BACK_OCCURRENCES, schedule_id)
        if rows:
            earliest = min(r["scheduled_for"] for r in rows)
            await conn.execute(queries.REWIND_SCHEDULE, schedule_id, earliest)

    async def delete_schedule(self, schedule_id: uuid.UUID) -> bool:
        """Delete a schedule; its occurrences that have not started are cancelled."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(queries.CANCEL_SCHEDULE_TASKS, schedule_id)
            deleted = await conn.fetchval(queries.DELETE_SCHEDULE, schedule_id)
        return deleted is not None

    async def list_schedules(
        self, *, paused: bool | None, name: str | None, limit: int, cursor: str | None
    ) -> SchedulePage:
        clauses = ["NOT from_task"]
        args: list[Any] = []
        if paused is not None:
            args.append(paused)
            clauses.append(f"paused = ${len(args)}")
        if name is not None:
            args.append(name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_"))
            clauses.append(f"name LIKE ${len(args)} || '%'")
        if cursor is not None:
            created_at, last_id = decode_cursor(cursor)
            args.extend([created_at, last_id])
            clauses.append(f"(created_at, id) < (${len(args) - 1}, ${len(args)})")
        args.append(limit + 1)
        sql = (
            f"SELECT {queries.SCHEDULE_COLUMNS} FROM schedules WHERE {' AND '.join(clauses)} "
            f"ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
        )
        rows = await self.pool.fetch(sql, *args)
        items = [_schedule(r) for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit and items:
            last = items[-1]
            assert last.created_at is not None
            next_cursor = encode_cursor(last.created_at, last.id)
        return SchedulePage(items, next_cursor)

    # -- the expander ---------------------------------------------------------------------

    async def expand(self, limit: int, planner: Planner) -> ExpansionPass:
        """Claim up to ``limit`` schedules due for expansion and expand them, in one
        transaction: one claim, at most one cancel, one insert and one update statement."""
        statements = 0
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(queries.CLAIM_SCHEDULES, limit)
            statements += 1
            if not rows:
                return ExpansionPass([], statements)
            now: datetime = rows[0]["db_now"]
            expansions = [planner(_schedule(r), r["busy"], now) for r in rows]
            cancel = [e.schedule_id for e in expansions if e.cancel_previous]
            if cancel:
                await conn.execute(queries.CANCEL_PENDING_OCCURRENCES, cancel)
                statements += 1
            tasks = [t for e in expansions for t in e.tasks]
            if tasks:
                await conn.execute(queries.INSERT_OCCURRENCES, *_insert_args(tasks, {}))
                statements += 1
            await conn.execute(
                queries.ADVANCE_SCHEDULES,
                [e.schedule_id for e in expansions],
                [e.next_run_at for e in expansions],
                [e.expand_at for e in expansions],
                [e.last_task_id for e in expansions],
            )
            statements += 1
        return ExpansionPass(expansions, statements)

    async def next_expansion_in(self) -> float | None:
        value: float | None = await self.pool.fetchval(queries.NEXT_EXPANSION_IN)
        return value
