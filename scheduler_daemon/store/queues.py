"""Queues as operators see them: depth, due, running, oldest due age; pause and resume."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from scheduler_daemon.store import queries
from scheduler_daemon.store.base import QueueState
from scheduler_daemon.store.workers import LIVE_TTL_S


def _state(row: asyncpg.Record) -> QueueState:
    return QueueState(
        name=row["queue"],
        depth=row["depth"],
        due=row["due"],
        running=row["running"],
        oldest_due_age_s=row["oldest_due_age_s"],
        paused_at=row["paused_at"],
        paused_by=row["paused_by"],
        due_without_worker=row["due_without_worker"],
        actions_without_worker=tuple(row["actions_without_worker"]),
    )


class PostgresQueueStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list_queues(self, configured: Sequence[str]) -> list[QueueState]:
        """Every queue with scheduled or running tasks, every paused one and ``configured``."""
        rows = await self.pool.fetch(queries.QUEUE_STATS, list(configured), None, LIVE_TTL_S)
        return [_state(r) for r in rows]

    async def get_queue(self, name: str) -> QueueState:
        """Any name is a queue (an empty one when no task uses it)."""
        rows = await self.pool.fetch(queries.QUEUE_STATS, [name], name, LIVE_TTL_S)
        return _state(rows[0])

    async def pause(self, name: str, by: str) -> bool:
        """Pause ``name``; False when it already was."""
        changed: bool = await self.pool.fetchval(queries.PAUSE_QUEUE, name, by)
        return changed

    async def resume(self, name: str) -> bool:
        """Resume ``name``; False when it was not paused."""
        changed: bool = await self.pool.fetchval(queries.RESUME_QUEUE, name)
        return changed
