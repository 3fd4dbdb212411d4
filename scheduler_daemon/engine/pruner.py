"""Retention: deletes finished tasks past their window (``retention.*``), a small batch per
statement, so the table and its indexes stop growing with every task ever run."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import asyncpg

from scheduler_daemon.clock import Clock
from scheduler_daemon.logs import get_logger
from scheduler_daemon.settings import RetentionSettings
from scheduler_daemon.store.base import PruneStore

_DAY_S = 86_400.0


class PruneMetrics(Protocol):
    def pruned(self, count: int) -> None: ...


class Pruner:
    """Deletes (and with ``archive``, first copies) expired tasks every ``interval_s``.

    The settings are read at every pass, so a reload applies from the next one. Several
    daemons may prune at once: each batch skips the rows another holds.
    """

    def __init__(
        self,
        store: PruneStore,
        clock: Clock,
        settings: Callable[[], RetentionSettings],
        metrics: PruneMetrics | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._metrics = metrics
        self._log = get_logger("pruner")
        self.pruned_total = 0

    async def sweep(self) -> int:
        """Delete every expired task, a batch per statement, until a batch comes back short;
        the tasks deleted. Database errors propagate (``run`` logs them)."""
        s = self._settings()
        total = 0
        try:
            while True:
                count = await self._store.prune(
                    s.completed_days * _DAY_S, s.failed_days * _DAY_S, s.batch_size, s.archive
                )
                total += count
                self.pruned_total += count
                if self._metrics is not None and count:
                    self._metrics.pruned(count)
                if count < s.batch_size:
                    return total
                await self._clock.sleep(0)  # let the rest of the daemon run between batches
        finally:
            if total:
                self._log.info("tasks_pruned", count=total, archive=s.archive)

    async def run(self) -> None:
        while True:
            try:
                await self.sweep()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                # Nothing is lost: what was not deleted is picked up by the next pass.
                self._log.warning(
                    "prune_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    retry_in_s=self._settings().interval_s,
                )
            await self._clock.sleep(self._settings().interval_s)
