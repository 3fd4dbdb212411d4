"""The completer: one writer that records finished attempts in batches."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import Callable

import asyncpg

from scheduler_daemon.alerts import AlertSink, ignore, task_failed
from scheduler_daemon.clock import Clock
from scheduler_daemon.domain.models import AttemptResult, Outcome, TaskStatus
from scheduler_daemon.engine.executor import storable_text
from scheduler_daemon.engine.leases import LeaseRegistry
from scheduler_daemon.engine.watchdog import NOOP
from scheduler_daemon.logs import get_logger
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.store.base import EngineStore

MAX_BATCH = 1000

# Errors that retrying the same values cannot cure: the database refuses a value.
_UNSTORABLE = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, TypeError, ValueError)


class Completer:
    def __init__(
        self,
        store: EngineStore,
        results: asyncio.Queue[AttemptResult],
        registry: LeaseRegistry,
        owner: str,
        clock: Clock,
        metrics: Metrics | None = None,
        on_recorded: Callable[[list[uuid.UUID]], None] | None = None,
        alerts: AlertSink | None = None,
    ) -> None:
        self._metrics = metrics
        self._alert = alerts or ignore
        self._on_recorded = on_recorded
        self._store = store
        self._results = results
        self._registry = registry
        self._owner = owner
        self._clock = clock
        self._log = get_logger("completer")
        self.recorded_total = 0
        self.report_progress = NOOP

    async def run(self) -> None:
        while True:
            batch = [await self._results.get()]
            while len(batch) < MAX_BATCH and not self._results.empty():
                batch.append(self._results.get_nowait())
            try:
                await self._write(batch)
                self.report_progress()
            finally:
                for _ in batch:
                    self._results.task_done()

    async def flush(self) -> None:
        """Wait until every queued result is written."""
        await self._results.join()

    async def _write(self, batch: list[AttemptResult]) -> None:
        try:
            applied = await self._complete(batch)
        except _UNSTORABLE:
            # One result the database refuses (a value it cannot hold) must not hold up the
            # others: write them one by one, and the refused one without its result.
            applied = set()
            for result in batch:
                applied |= await self._complete_alone(result)
        self._report(batch, applied)

    async def _complete(self, batch: list[AttemptResult]) -> set[uuid.UUID]:
        """Write a batch, retrying while the database is unreachable; data errors propagate."""
        backoff = 0.05
        while True:
            try:
                return await self._store.complete(self._owner, batch)
            except _UNSTORABLE:
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                # Keep the batch: the leases stay ours while the heartbeat can renew them, and
                # a result that arrives after its lease is gone is fenced out, never doubled.
                self._log.warning(
                    "complete_failed", error=str(exc), retry_in_s=backoff, batch=len(batch)
                )
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    async def _complete_alone(self, result: AttemptResult) -> set[uuid.UUID]:
        try:
            return await self._complete([result])
        except _UNSTORABLE as exc:
            reason = f"{type(exc).__name__}: {exc}"
        self._log.error(
            "result_unstorable", task_id=str(result.task_id), attempt=result.attempt, error=reason
        )
        # Record the attempt all the same, as a failure that says why (retried if it may be).
        stripped = dataclasses.replace(
            result,
            outcome=Outcome.FAILED if result.outcome is Outcome.SUCCEEDED else result.outcome,
            next_status=TaskStatus.FAILED
            if result.next_status is TaskStatus.COMPLETED
            else result.next_status,
            result=None,
            output=None,
            error=storable_text(f"the attempt's result could not be stored: {reason}", 2000),
        )
        try:
            return await self._complete([stripped])
        except _UNSTORABLE:
            return set()  # the lease runs out and the rescuer records the attempt as lost

    def _report(self, batch: list[AttemptResult], applied: set[uuid.UUID]) -> None:
        if self._metrics is not None:
            self._metrics.finished(r for r in batch if r.task_id in applied)
        for result in batch:
            self._registry.discard(result.task_id)
            if result.task_id in applied and result.next_status is TaskStatus.COMPLETED:
                continue  # the hot path: nothing worth a log line
            log = self._log.bind(task_id=str(result.task_id), attempt=result.attempt)
            if result.task_id not in applied:
                log.warning("completion_fenced", reason="lease no longer held")
            elif result.next_status is TaskStatus.SCHEDULED:
                log.info(
                    "task_retry_scheduled",
                    error=result.error,
                    outcome=result.outcome.value,
                    retry_in_s=round(result.retry_in_s or 0.0, 3),
                )
            else:
                log.error("task_failed", error=result.error, outcome=result.outcome.value)
                self._alert(
                    task_failed(
                        result.task_id, result.action, result.queue, result.attempt, result.error
                    )
                )
        self.recorded_total += len(applied)
        if self._on_recorded is not None:
            # Applied or fenced out, this daemon is done with these attempts.
            self._on_recorded([r.task_id for r in batch])
