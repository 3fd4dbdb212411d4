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
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.signals import CompleterSignals
from scheduler_daemon.engine.watchdog import NOOP
from scheduler_daemon.logs import get_logger
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.store.base import EngineStore
from scheduler_daemon.store.errors import describe, is_unavailable

MAX_BATCH = 1000

# How often in a row a batch may fail with an unexpected error before its results are written
# one by one (so that one result causing it holds up only itself).
UNEXPECTED_TRIES = 3

# Errors that retrying the same values cannot cure: the database refuses a value.
_UNSTORABLE = (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, TypeError, ValueError)


class _Persistent(Exception):
    """A batch kept failing with an error outside the lists above."""


class Completer:
    def __init__(
        self,
        store: EngineStore,
        results: asyncio.Queue[AttemptResult],
        inflight: InFlight,
        owner: str,
        clock: Clock,
        metrics: Metrics | None = None,
        on_recorded: Callable[[list[uuid.UUID]], None] | None = None,
        alerts: AlertSink | None = None,
        signals: CompleterSignals | None = None,
    ) -> None:
        self._metrics = metrics
        self._alert = alerts or ignore
        self._on_recorded = on_recorded
        self._store = store
        self._results = results
        self._inflight = inflight
        self._owner = owner
        self._clock = clock
        self._log = get_logger("completer")
        self.recorded_total = 0
        self.signals = signals or CompleterSignals()
        self.report_progress = NOOP
        self._held: list[AttemptResult] = []

    async def run(self) -> None:
        """Write results as they come, a batch at a time.

        The batch being written lives on the completer, not in this coroutine: when the
        supervisor restarts a completer that crashed, the new run writes what the old one held
        before it takes anything new, so a result that was produced is never dropped.
        """
        while True:
            if not self._held:
                self._held = await self._take()
            await self._write(self._held)
            done, self._held = len(self._held), []
            for _ in range(done):
                self._results.task_done()
            self.report_progress()

    async def _take(self) -> list[AttemptResult]:
        batch = [await self._results.get()]
        while len(batch) < MAX_BATCH and not self._results.empty():
            batch.append(self._results.get_nowait())
        return batch

    @property
    def held(self) -> int:
        """Results taken from the queue and not yet written."""
        return len(self._held)

    async def flush(self) -> None:
        """Wait until every queued result is written."""
        await self._results.join()

    async def _write(self, batch: list[AttemptResult]) -> None:
        try:
            applied = await self._complete(batch)
        except _UNSTORABLE:
            applied = await self._one_by_one(batch)
        except _Persistent:
            # The same batch failed again and again with an error nobody expected: one of its
            # results may be the cause. Written one by one, it holds up only itself.
            applied = await self._one_by_one(batch)
        try:
            self._report(batch, applied)
        except Exception:  # the results are written: a report must not write them again
            self._log.exception("completion_report_failed", batch=len(batch))
        if self.signals.recorded.armed:
            self.signals.recorded.emit([r.task_id for r in batch])

    async def _one_by_one(self, batch: list[AttemptResult]) -> set[uuid.UUID]:
        """One result the database refuses (a value it cannot hold) must not hold up the
        others: write them one by one, and a refused one without its result."""
        applied: set[uuid.UUID] = set()
        for result in batch:
            applied |= await self._complete_alone(result)
        return applied

    async def _complete(self, batch: list[AttemptResult]) -> set[uuid.UUID]:
        """Write a batch; retry while it fails for any reason but a refused value.

        The database being unreachable is retried for as long as it lasts: the leases stay
        ours while the lease keeper renews them, and a result that arrives after its lease is
        gone is fenced out, never doubled. Any other error is retried too (on a fresh
        connection: the store discards a connection whose state is unknown); after
        ``UNEXPECTED_TRIES`` of those in a row ``_Persistent`` is raised so the caller can
        isolate the result that causes it.
        """
        backoff = 0.05
        unexpected = 0
        while True:
            try:
                return await self._store.complete(self._owner, batch)
            except _UNSTORABLE:
                raise
            except Exception as exc:
                if is_unavailable(exc):
                    self._log.warning(
                        "complete_failed", error=describe(exc), retry_in_s=backoff, batch=len(batch)
                    )
                else:
                    unexpected += 1
                    self._log.error(
                        "complete_failed",
                        error=describe(exc),
                        retry_in_s=backoff,
                        batch=len(batch),
                        unexpected=unexpected,
                        exc_info=True,
                    )
                    if unexpected >= UNEXPECTED_TRIES:
                        raise _Persistent(describe(exc)) from exc
                self.signals.retrying.emit(describe(exc))
            await self._clock.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _complete_alone(self, result: AttemptResult) -> set[uuid.UUID]:
        try:
            return await self._complete([result])
        except (*_UNSTORABLE, _Persistent) as exc:
            reason = str(exc) if isinstance(exc, _Persistent) else describe(exc)
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
        while True:
            try:
                return await self._complete([stripped])
            except _UNSTORABLE:
                return set()  # the lease runs out and the rescuer records the attempt as lost
            except _Persistent:
                continue  # nothing of the result is left to blame: the database must recover

    def _report(self, batch: list[AttemptResult], applied: set[uuid.UUID]) -> None:
        if self._metrics is not None:
            self._metrics.finished(r for r in batch if r.task_id in applied)
        self._inflight.release(r.task_id for r in batch)
        for result in batch:
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
