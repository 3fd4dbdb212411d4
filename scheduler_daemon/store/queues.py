"""Queues as operators see them: depth, due, running, oldest due age; pause and resume."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from scheduler_daemon.store import queries


@dataclass(frozen=True, slots=True)
class QueueState:
    name: str
    depth: int  # scheduled tasks, due or not
    due: int  # scheduled and due now (waiting for a slot, a limit or a resume)
    running: int  # across all daemons
    oldest_due_age_s: float | None  # how long the longest-waiting due task has waited
    paused_at: datetime | None
    paused_by: str | None


def _state(row: asyncpg.Record) -> QueueState:
    return QueueState(
        name=row["queue"],
        depth=row["depth"],
        due=row["due"],
        running=row["running"],
        oldest_due_age_s=row["oldest_due_age_s"],
        paused_at=row["paused_at"],
        paused_by=row["paused_by"],
    )


class QueueStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def list_queues(self, configured: Sequence[str]) -> list[QueueState]:
        """Every queue with scheduled or running tasks, every paused one and ``configured``."""
        rows = await self.pool.fetch(queries.QUEUE_STATS, list(configured), None)
        return [_state(r) for r in rows]

    async def get_queue(self, name: str) -> QueueState:
        """Any name is a queue (an empty one when no task uses it)."""
        rows = await self.pool.fetch(queries.QUEUE_STATS, [name], name)
        return _state(rows[0])

    async def pause(self, name: str, by: str) -> bool:
        """Pause ``name``; False when it already was."""
        changed: bool = await self.pool.fetchval(queries.PAUSE_QUEUE, name, by)
        return changed

    async def resume(self, name: str) -> bool:
        """Resume ``name``; False when it was not paused."""
        changed: bool = await self.pool.fetchval(queries.RESUME_QUEUE, name)
        return changed
