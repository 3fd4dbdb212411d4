"""Retention: deleting finished tasks (and their attempts) past their window, a batch at a
time, optionally copying them to the archive tables first."""

from __future__ import annotations

import asyncpg

from scheduler_daemon.store import queries


class PostgresRetentionStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def prune(
        self, completed_after_s: float, failed_after_s: float, limit: int, archive: bool
    ) -> int:
        """Delete up to ``limit`` expired tasks in one statement; how many were deleted.

        Completed and cancelled tasks expire ``completed_after_s`` seconds after they finished,
        failed ones ``failed_after_s``; both measured on the database's clock. With
        ``archive``, the tasks and their attempts are copied to ``tasks_archive`` and
        ``task_attempts_archive`` by the same statement.
        """
        sql = queries.PRUNE_TASKS_ARCHIVE if archive else queries.PRUNE_TASKS
        count: int = await self.pool.fetchval(sql, completed_after_s, failed_after_s, limit)
        return count
