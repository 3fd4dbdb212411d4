"""The daemons that run tasks and the actions each runs (table ``workers``)."""

from __future__ import annotations

import asyncpg

from scheduler_daemon.store import queries
from scheduler_daemon.store.base import Unrunnable

# A daemon whose row was not refreshed for this long is taken for gone: its actions no longer
# count as runnable. Rows refresh every PRESENCE_INTERVAL_S (engine/presence.py), from the lease
# keeper's thread and connection (engine/lease_keeper.py).
LIVE_TTL_S = 30.0
# Rows unseen this long are deleted (daemons killed without a chance to remove their own).
FORGET_AFTER_S = 86_400.0


class PostgresWorkerStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def live_actions(self) -> frozenset[str]:
        """The actions some live daemon runs."""
        actions: list[str] = await self.pool.fetchval(queries.LIVE_ACTIONS, LIVE_TTL_S)
        return frozenset(actions)

    async def unrunnable(self) -> list[Unrunnable]:
        """Due tasks no live daemon can run, by queue and action."""
        rows = await self.pool.fetch(queries.UNRUNNABLE_DUE, LIVE_TTL_S)
        return [Unrunnable(r["queue"], r["action"], r["due"], r["oldest_due_age_s"]) for r in rows]

    async def unrunnable_by_action(self) -> dict[str, int]:
        """The same, counted by action (the scheduler_tasks_due_without_worker gauge)."""
        by_action: dict[str, int] = {}
        for u in await self.unrunnable():
            by_action[u.action] = by_action.get(u.action, 0) + u.due
        return by_action
