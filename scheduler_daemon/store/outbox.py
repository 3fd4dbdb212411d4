"""The eventbridge backend's side of PostgreSQL: the outbox the publisher drains and the claims
the SQS consumer makes for received messages."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg

from scheduler_daemon.domain.models import ClaimedTask, TaskStatus
from scheduler_daemon.store import queries
from scheduler_daemon.store.base import MessageTask, OutboxRow, Published
from scheduler_daemon.store.postgres import claimed_tasks


class PostgresOutboxBatch:
    """Rows picked by one publisher pass; their locks are held until the pass ends."""

    def __init__(self, conn: asyncpg.pool.PoolConnectionProxy, rows: list[OutboxRow]) -> None:
        self._conn = conn
        self.rows = rows

    async def mark(self, published: Sequence[Published]) -> None:
        if not published:
            return
        await self._conn.execute(
            queries.MARK_PUBLISHED,
            [p.task_id for p in published],
            [p.version for p in published],
            [p.schedule for p in published],
        )


class PostgresDeletionBatch:
    def __init__(self, conn: asyncpg.pool.PoolConnectionProxy, names: list[str]) -> None:
        self._conn = conn
        self.names = names

    async def done(self, names: Sequence[str]) -> None:
        if names:
            await self._conn.execute(queries.DELETE_SCHEDULE_DELETIONS, list(names))


class PostgresOutboxStore:
    """``runnable``: the actions the consumer may claim (None: every action); a wake-up of a
    task of another action is not claimed here (see MessageTask.runnable)."""

    def __init__(self, pool: asyncpg.Pool, runnable: Sequence[str] | None = None) -> None:
        self.pool = pool
        self.runnable = None if runnable is None else sorted(runnable)

    @asynccontextmanager
    async def batch(self, limit: int) -> AsyncIterator[PostgresOutboxBatch]:
        """Pick up to ``limit`` outbox rows in a transaction that commits on exit."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(queries.PICK_OUTBOX, limit)
            yield PostgresOutboxBatch(
                conn,
                [
                    OutboxRow(
                        task_id=r["id"],
                        status=TaskStatus(r["status"]),
                        run_at=r["run_at"],
                        due_in_s=r["due_in_s"],
                        version=r["wake_version"],
                        published_version=r["published_version"],
                        schedule=r["aws_schedule"],
                    )
                    for r in rows
                ],
            )

    @asynccontextmanager
    async def deletions(self, limit: int) -> AsyncIterator[PostgresDeletionBatch]:
        """Schedules of deleted tasks, locked until the batch ends."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(queries.PICK_SCHEDULE_DELETIONS, limit)
            yield PostgresDeletionBatch(conn, [r["name"] for r in rows])

    async def count_pending(self) -> int:
        value: int = await self.pool.fetchval(queries.COUNT_OUTBOX)
        return value

    async def republish_stale(self, older_than_s: float, limit: int) -> list[uuid.UUID]:
        rows = await self.pool.fetch(queries.REPUBLISH_STALE, older_than_s, limit)
        return [r["id"] for r in rows]

    async def claim_messages(
        self,
        owner: str,
        messages: Sequence[tuple[uuid.UUID, int]],
        lease_s: float,
        exclude: Sequence[str] = (),
    ) -> list[ClaimedTask]:
        """Claim the due tasks of wake-ups (task id, series), but not those of paused queues
        or of the queues in ``exclude``."""
        rows = await self.pool.fetch(
            queries.CLAIM_MESSAGES,
            [task_id for task_id, _ in messages],
            [version for _, version in messages],
            owner,
            lease_s,
            list(exclude),
            self.runnable,
        )
        return claimed_tasks(rows)

    async def claim_queue_messages(
        self,
        owner: str,
        queue: str,
        messages: Sequence[tuple[uuid.UUID, int]],
        limit: int,
        lease_s: float,
        global_limit: int | None,
    ) -> list[ClaimedTask]:
        """Claim up to ``limit`` tasks of wake-ups of ``queue``, within its global limit."""
        args = (
            limit,
            owner,
            lease_s,
            queue,
            global_limit,
            [task_id for task_id, _ in messages],
            [version for _, version in messages],
            self.runnable,
        )
        async with self.pool.acquire() as conn, conn.transaction():
            if global_limit is not None:
                await conn.execute(queries.LOCK_QUEUE, queue)
            rows = await conn.fetch(queries.CLAIM_QUEUE_MESSAGES, *args)
        return claimed_tasks(rows)

    async def deferred(self, ids: Sequence[uuid.UUID]) -> None:
        """Wake-ups held back by a queue's pause or limit are alive: not to be republished."""
        await self.pool.execute(queries.WAKEUPS_DEFERRED, list(ids))

    async def message_tasks(self, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, MessageTask]:
        rows = await self.pool.fetch(queries.MESSAGE_TASKS, list(ids))
        return {
            r["id"]: MessageTask(
                TaskStatus(r["status"]),
                r["wake_version"],
                r["due_in_s"],
                r["queue"],
                r["paused"],
                self.runnable is None or r["action"] in self.runnable,
            )
            for r in rows
        }
