"""The outbox publisher: drains the outbox into the wake-up queue and schedules.

A task due within ``eventbridge.schedule_after_s`` becomes a wake-up message delayed until
about its time (SQS DelaySeconds in production); a later one a one-time schedule that sends
the same message to the queue (an EventBridge Scheduler ``at()`` schedule), ``lead_s`` ahead.
Rows are picked with ``FOR UPDATE SKIP LOCKED`` and marked published in the same transaction,
only for what the services accepted: a row stays in the outbox until then, so an outage delays
wake-ups and loses none. The services are reached through the port of ``engine/wakeups.py``.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from scheduler_daemon.clock import Clock, wait_event
from scheduler_daemon.engine.signals import PublisherSignals
from scheduler_daemon.engine.wakeups import (
    MAX_BATCH,
    OutgoingWakeUp,
    RemoteError,
    ScheduleTarget,
    WakeUpQueue,
    WakeUpSchedules,
    describe_error,
)
from scheduler_daemon.engine.watchdog import NOOP
from scheduler_daemon.logs import get_logger
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.store.base import OutboxRow, OutboxStore, Published

CONCURRENT_CALLS = 10
MAINTENANCE_INTERVAL_S = 30.0
STALE_BATCH = 500
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class PublisherOptions:
    queue_url: str
    target_arn: str | None  # None: the wake-up queue itself
    group: str
    role_arn: str
    dead_letter_arn: str | None = None
    schedule_after_s: int = 900
    lead_s: int = 60
    max_retry_attempts: int = 185
    max_event_age_s: int = 86_400
    batch_size: int = 50
    republish_after_s: float = 300.0


class PublishError(Exception):
    def __init__(self, failures: Sequence[BaseException]) -> None:
        super().__init__(f"{len(failures)} AWS calls failed")
        self.failures = list(failures)

    @property
    def throttled(self) -> bool:
        return any(isinstance(f, RemoteError) and f.throttled for f in self.failures)


class Publisher:
    def __init__(
        self,
        outbox: OutboxStore,
        queue: WakeUpQueue,
        schedules: WakeUpSchedules,
        options: Callable[[], PublisherOptions],
        clock: Clock,
        poll_interval_s: Callable[[], float],
        metrics: Metrics | None = None,
        signals: PublisherSignals | None = None,
    ) -> None:
        self._outbox = outbox
        self._queue = queue
        self._schedules = schedules
        self._options = options
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._log = get_logger("publisher")
        self._calls = asyncio.Semaphore(CONCURRENT_CALLS)
        self.published_total = 0
        self.signals = signals or PublisherSignals()
        self.report_progress = NOOP

    def notify(self, _delay_s: float | None = None) -> None:
        """Something was written that may need publishing."""
        self._wake.set()

    async def run(self) -> None:
        backoff = 0.0
        next_maintenance = 0.0
        while True:
            self.report_progress()
            self._wake.clear()
            try:
                if self._clock.monotonic() >= next_maintenance:
                    await self.maintain()
                    next_maintenance = self._clock.monotonic() + MAINTENANCE_INTERVAL_S
                picked = await self.publish_once()
            except (PublishError, RemoteError, *DB_ERRORS) as exc:
                throttled = isinstance(exc, PublishError | RemoteError) and exc.throttled
                backoff = min(max(backoff * 2, 1.0 if throttled else 0.2), 30.0)
                self._log.warning(
                    "publish_failed",
                    error=_describe(exc),
                    throttled=throttled,
                    retry_in_s=backoff,
                )
                await self._clock.sleep(backoff)
                continue
            backoff = 0.0
            if picked >= self._options().batch_size:
                continue  # more waiting
            wait = self._poll_interval_s()
            self.signals.slept.emit(wait)
            await wait_event(self._wake, self._clock, wait)

    async def publish_once(self) -> int:
        """One pass over the outbox; returns how many rows it picked. Raises PublishError
        (after committing what the services accepted) when some calls failed."""
        options = self._options()
        async with self._outbox.batch(options.batch_size) as batch:
            if not batch.rows:
                return 0
            published, failures = await self._publish(batch.rows, options)
            await batch.mark(published)
        self._count(published)
        self.signals.published.emit(len(batch.rows))
        if failures:
            raise PublishError(failures)
        return len(batch.rows)

    async def maintain(self) -> None:
        """Delete the schedules of deleted tasks; publish again wake-ups that led nowhere."""
        options = self._options()
        async with self._outbox.deletions(options.batch_size) as deletions:
            results = await asyncio.gather(
                *(self._delete_schedule(name, options) for name in deletions.names),
                return_exceptions=True,
            )
            await deletions.done(
                [n for n, r in zip(deletions.names, results, strict=True) if r is None]
            )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise PublishError(failures)
        stale = await self._outbox.republish_stale(options.republish_after_s, STALE_BATCH)
        if stale:
            self._log.warning(
                "wakeups_republished",
                tasks=len(stale),
                reason=f"due for over {options.republish_after_s:g} s without a claim",
            )

    # -- one pass ---------------------------------------------------------------------------

    async def _publish(
        self, rows: Sequence[OutboxRow], options: PublisherOptions
    ) -> tuple[list[Published], list[BaseException]]:
        published: list[Published] = []
        failures: list[BaseException] = []
        # Old schedules first: a task scheduled anew (or no longer scheduled) drops the one
        # made for its previous version.
        stale = [r for r in rows if r.schedule is not None]
        outcome = await asyncio.gather(
            *(self._delete_schedule(r.schedule or "", options) for r in stale),
            return_exceptions=True,
        )
        cleared: set[uuid.UUID] = set()
        for row, result in zip(stale, outcome, strict=True):
            if isinstance(result, BaseException):
                failures.append(result)
            else:
                cleared.add(row.task_id)
                if not row.needs_publishing:
                    published.append(Published(row.task_id, None, None))
        todo = [
            r for r in rows if r.needs_publishing and (r.schedule is None or r.task_id in cleared)
        ]
        soon = [r for r in todo if r.due_in_s <= options.schedule_after_s]
        later = [r for r in todo if r.due_in_s > options.schedule_after_s]
        calls: list[Awaitable[list[Published]]] = [
            self._send_messages(soon[i : i + MAX_BATCH], options)
            for i in range(0, len(soon), MAX_BATCH)
        ]
        calls += [self._create_schedule(r, options) for r in later]
        for answer in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer
                failures.append(answer)
            else:
                published.extend(answer)
        return published, failures

    async def _send_messages(
        self, rows: Sequence[OutboxRow], options: PublisherOptions
    ) -> list[Published]:
        wakeups = [OutgoingWakeUp(r.task_id, r.version, r.due_in_s) for r in rows]
        async with self._calls:
            sent, refused = await self._queue.send(options.queue_url, wakeups)
        if refused:
            first = refused[0]
            self._log.warning(
                "messages_refused", count=len(refused), code=first.code, error=first.message
            )
            if self._metrics is not None:
                self._metrics.outbox_errors.labels(str(first.code or "")).inc(len(refused))
        return [Published(rows[i].task_id, rows[i].version, None) for i in sent]

    async def _create_schedule(self, row: OutboxRow, options: PublisherOptions) -> list[Published]:
        target = ScheduleTarget(
            queue_url=options.queue_url,
            group=options.group,
            role_arn=options.role_arn,
            arn=options.target_arn,
            dead_letter_arn=options.dead_letter_arn,
            max_retry_attempts=options.max_retry_attempts,
            max_event_age_s=options.max_event_age_s,
        )
        fire_at = row.run_at - timedelta(seconds=options.lead_s)
        async with self._calls:
            name = await self._schedules.create(row.task_id, row.version, fire_at, target)
        return [Published(row.task_id, row.version, name)]

    async def _delete_schedule(self, name: str, options: PublisherOptions) -> None:
        async with self._calls:
            await self._schedules.delete(name, options.group)
        if self._metrics is not None:
            self._metrics.outbox_published.labels("schedule_deleted").inc()

    def _count(self, published: Sequence[Published]) -> None:
        self.published_total += sum(1 for p in published if p.version is not None)
        if self._metrics is None:
            return
        for p in published:
            if p.version is not None:
                kind = "message" if p.schedule is None else "schedule"
                self._metrics.outbox_published.labels(kind).inc()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, PublishError):
        first = exc.failures[0]
        return f"{exc}; first: {_describe(first)}"
    return describe_error(exc)
