"""The publisher: drains the outbox into AWS.

A task due within ``eventbridge.schedule_after_s`` becomes an SQS message with DelaySeconds;
a later one an EventBridge Scheduler ``at()`` schedule that sends the same message to the
queue. Rows are picked with ``FOR UPDATE SKIP LOCKED`` and marked published in the same
transaction, only for what AWS accepted: a row stays in the outbox until then, so an AWS
outage delays wake-ups and loses none.
"""

from __future__ import annotations

import asyncio
import json
import math
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from scheduler_daemon.aws.clients import AWS_ERRORS, error_code, is_throttling
from scheduler_daemon.clock import Clock, wait_event
from scheduler_daemon.engine.watchdog import NOOP
from scheduler_daemon.logs import get_logger
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.store.outbox import OutboxRow, OutboxStore, Published

if TYPE_CHECKING:
    from types_aiobotocore_scheduler import EventBridgeSchedulerClient
    from types_aiobotocore_sqs import SQSClient

MAX_DELAY_S = 900  # SQS's longest DelaySeconds
SQS_BATCH = 10  # entries per SendMessageBatch
CONCURRENT_CALLS = 10
NOT_FOUND = "ResourceNotFoundException"
MAINTENANCE_INTERVAL_S = 30.0
STALE_BATCH = 500
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class PublisherOptions:
    queue_url: str
    target_arn: str
    group: str
    role_arn: str
    dead_letter_arn: str | None = None
    schedule_after_s: int = 900
    lead_s: int = 60
    max_retry_attempts: int = 185
    max_event_age_s: int = 86_400
    batch_size: int = 50
    republish_after_s: float = 300.0


def schedule_name(task_id: uuid.UUID, version: int) -> str:
    """The at() schedule of one scheduling of a task: deterministic, so a repeated create
    after a lost answer finds the first one (at most 64 characters)."""
    return f"task-{task_id}-{version}"


def message_body(task_id: uuid.UUID, version: int) -> str:
    """The wake-up message: the task's id and its scheduling (``series``), never the payload."""
    return json.dumps({"task_id": str(task_id), "series": version}, separators=(",", ":"))


def at_expression(when: datetime) -> str:
    """``at(yyyy-mm-ddThh:mm:ss)`` in UTC (seconds rounded up: never before ``when``)."""
    when = when.astimezone(UTC)
    if when.microsecond:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    return f"at({when:%Y-%m-%dT%H:%M:%S})"


def delay_seconds(due_in_s: float) -> int:
    """DelaySeconds for a task due in ``due_in_s``: whole seconds, rounded down (the message
    arrives up to a second early and the consumer holds it to run_at)."""
    return max(0, min(MAX_DELAY_S, math.floor(due_in_s)))


class PublishError(Exception):
    def __init__(self, failures: Sequence[BaseException]) -> None:
        super().__init__(f"{len(failures)} AWS calls failed")
        self.failures = list(failures)

    @property
    def throttled(self) -> bool:
        return any(is_throttling(f) for f in self.failures)


class Publisher:
    def __init__(
        self,
        outbox: OutboxStore,
        sqs: SQSClient,
        scheduler: EventBridgeSchedulerClient,
        options: Callable[[], PublisherOptions],
        clock: Clock,
        poll_interval_s: Callable[[], float],
        metrics: Metrics | None = None,
    ) -> None:
        self._outbox = outbox
        self._sqs = sqs
        self._scheduler = scheduler
        self._options = options
        self._clock = clock
        self._poll_interval_s = poll_interval_s
        self._metrics = metrics
        self._wake = asyncio.Event()
        self._log = get_logger("publisher")
        self._calls = asyncio.Semaphore(CONCURRENT_CALLS)
        self.published_total = 0
        self.idle = asyncio.Event()  # set while the outbox is drained (tests await it)
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
            except (PublishError, *AWS_ERRORS, *DB_ERRORS) as exc:
                self.idle.clear()
                throttled = (isinstance(exc, PublishError) and exc.throttled) or is_throttling(exc)
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
            self.idle.set()
            await wait_event(self._wake, self._clock, self._poll_interval_s())
            self.idle.clear()

    async def publish_once(self) -> int:
        """One pass over the outbox; returns how many rows it picked. Raises PublishError
        (after committing what AWS accepted) when some calls failed."""
        options = self._options()
        async with self._outbox.batch(options.batch_size) as batch:
            if not batch.rows:
                return 0
            published, failures = await self._publish(batch.rows, options)
            await batch.mark(published)
        self._count(published)
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
            self._send_messages(soon[i : i + SQS_BATCH], options)
            for i in range(0, len(soon), SQS_BATCH)
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
        entries: list[Any] = [
            {
                "Id": str(i),
                "MessageBody": message_body(r.task_id, r.version),
                "DelaySeconds": delay_seconds(r.due_in_s),
            }
            for i, r in enumerate(rows)
        ]
        async with self._calls:
            answer = await self._sqs.send_message_batch(QueueUrl=options.queue_url, Entries=entries)
        sent = {int(e["Id"]) for e in answer.get("Successful", [])}
        failed = answer.get("Failed", [])
        if failed:
            first = failed[0]
            self._log.warning(
                "messages_refused",
                count=len(failed),
                code=first.get("Code"),
                error=first.get("Message"),
            )
            if self._metrics is not None:
                self._metrics.outbox_errors.labels(str(first.get("Code", ""))).inc(len(failed))
        return [Published(rows[i].task_id, rows[i].version, None) for i in sorted(sent)]

    async def _create_schedule(self, row: OutboxRow, options: PublisherOptions) -> list[Published]:
        name = schedule_name(row.task_id, row.version)
        target: Any = {
            "Arn": options.target_arn,
            "RoleArn": options.role_arn,
            "Input": message_body(row.task_id, row.version),
            "RetryPolicy": {
                "MaximumRetryAttempts": options.max_retry_attempts,
                "MaximumEventAgeInSeconds": options.max_event_age_s,
            },
        }
        if options.dead_letter_arn:
            target["DeadLetterConfig"] = {"Arn": options.dead_letter_arn}
        fire_at = row.run_at - timedelta(seconds=options.lead_s)
        try:
            async with self._calls:
                await self._scheduler.create_schedule(
                    Name=name,
                    GroupName=options.group,
                    ScheduleExpression=at_expression(fire_at),
                    ScheduleExpressionTimezone="UTC",
                    FlexibleTimeWindow={"Mode": "OFF"},
                    ActionAfterCompletion="DELETE",
                    ClientToken=name,
                    Description=f"scheduler-daemon task {row.task_id}",
                    Target=target,
                )
        except AWS_ERRORS as exc:
            # Created by an earlier pass whose commit was lost: the name is this version's.
            if error_code(exc) != "ConflictException":
                raise
        return [Published(row.task_id, row.version, name)]

    async def _delete_schedule(self, name: str, options: PublisherOptions) -> None:
        try:
            async with self._calls:
                await self._scheduler.delete_schedule(
                    Name=name, GroupName=options.group, ClientToken=f"delete-{name}"[:64]
                )
        except AWS_ERRORS as exc:
            if error_code(exc) != NOT_FOUND:  # fired and deleted itself, or never created
                raise
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
    code = error_code(exc)
    return f"{type(exc).__name__}{f' {code}' if code else ''}: {exc}"
