"""The wake-up port (``engine/wakeups.py``) on SQS and EventBridge Scheduler.

Each operation is one AWS call; its SDK and transport errors leave as ``RemoteError`` (with the
error's class name, AWS error code and whether it is throttling), so that the engine's loops
never see the SDK. Importing this module loads no SDK session: ``connect`` opens the clients.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scheduler_daemon.aws.clients import (
    AWS_ERRORS,
    error_code,
    is_throttling,
    queue_arn_from_url,
    scheduler_client,
    sqs_client,
)
from scheduler_daemon.aws.codec import (
    at_expression,
    delay_seconds,
    delivery,
    message_body,
    schedule_name,
)
from scheduler_daemon.engine.wakeups import (
    Delivery,
    OutgoingWakeUp,
    Refused,
    RemoteError,
    ScheduleTarget,
)

if TYPE_CHECKING:
    from types_aiobotocore_scheduler import EventBridgeSchedulerClient
    from types_aiobotocore_sqs import SQSClient

NOT_FOUND = "ResourceNotFoundException"
CONFLICT = "ConflictException"


def remote_error(exc: BaseException) -> RemoteError:
    return RemoteError(
        str(exc), kind=type(exc).__name__, code=error_code(exc), throttled=is_throttling(exc)
    )


@contextlib.contextmanager
def _remote() -> Iterator[None]:
    try:
        yield
    except AWS_ERRORS as exc:
        raise remote_error(exc) from exc


def _refused(entries: Sequence[Any]) -> list[Refused]:
    return [Refused(e.get("Code"), e.get("Message")) for e in entries]


class SqsWakeUpQueue:
    """``WakeUpQueue`` on an SQS queue."""

    def __init__(self, sqs: SQSClient) -> None:
        self._sqs = sqs

    async def receive(
        self, queue_url: str, max_messages: int, wait_s: int, visibility_s: int
    ) -> list[Delivery]:
        with _remote():
            answer = await self._sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=max_messages,
                WaitTimeSeconds=wait_s,
                VisibilityTimeout=visibility_s,
            )
        return [delivery(m) for m in answer.get("Messages", [])]

    async def change_visibility(
        self, queue_url: str, changes: Sequence[tuple[str, int]]
    ) -> list[Refused]:
        entries: Any = [
            {"Id": str(n), "ReceiptHandle": r, "VisibilityTimeout": seconds}
            for n, (r, seconds) in enumerate(changes)
        ]
        with _remote():
            answer = await self._sqs.change_message_visibility_batch(
                QueueUrl=queue_url, Entries=entries
            )
        return _refused(answer.get("Failed", []))

    async def delete(self, queue_url: str, receipts: Sequence[str]) -> tuple[int, list[Refused]]:
        entries: Any = [{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(receipts)]
        with _remote():
            answer = await self._sqs.delete_message_batch(QueueUrl=queue_url, Entries=entries)
        return len(answer.get("Successful", [])), _refused(answer.get("Failed", []))

    async def send(
        self, queue_url: str, wakeups: Sequence[OutgoingWakeUp]
    ) -> tuple[list[int], list[Refused]]:
        entries: Any = [
            {
                "Id": str(i),
                "MessageBody": message_body(w.task_id, w.version),
                "DelaySeconds": delay_seconds(w.due_in_s),
            }
            for i, w in enumerate(wakeups)
        ]
        with _remote():
            answer = await self._sqs.send_message_batch(QueueUrl=queue_url, Entries=entries)
        sent = sorted(int(e["Id"]) for e in answer.get("Successful", []))
        return sent, _refused(answer.get("Failed", []))


class SchedulerWakeUps:
    """``WakeUpSchedules`` as EventBridge Scheduler ``at()`` schedules that send the wake-up
    message to the queue (or to ``target.arn``), deleted once they fired."""

    def __init__(self, scheduler: EventBridgeSchedulerClient, region: str) -> None:
        self._scheduler = scheduler
        self._region = region

    async def create(
        self, task_id: uuid.UUID, version: int, fire_at: datetime, target: ScheduleTarget
    ) -> str:
        name = schedule_name(task_id, version)
        arn = target.arn or queue_arn_from_url(target.queue_url, self._region)
        spec: Any = {
            "Arn": arn,
            "RoleArn": target.role_arn,
            "Input": message_body(task_id, version),
            "RetryPolicy": {
                "MaximumRetryAttempts": target.max_retry_attempts,
                "MaximumEventAgeInSeconds": target.max_event_age_s,
            },
        }
        if target.dead_letter_arn:
            spec["DeadLetterConfig"] = {"Arn": target.dead_letter_arn}
        try:
            await self._scheduler.create_schedule(
                Name=name,
                GroupName=target.group,
                ScheduleExpression=at_expression(fire_at),
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                ClientToken=name,
                Description=f"scheduler-daemon task {task_id}",
                Target=spec,
            )
        except AWS_ERRORS as exc:
            # Created by an earlier pass whose commit was lost: the name is this version's.
            if error_code(exc) != CONFLICT:
                raise remote_error(exc) from exc
        return name

    async def delete(self, name: str, group: str) -> None:
        try:
            await self._scheduler.delete_schedule(
                Name=name, GroupName=group, ClientToken=f"delete-{name}"[:64]
            )
        except AWS_ERRORS as exc:
            if error_code(exc) != NOT_FOUND:  # fired and deleted itself, or never created
                raise remote_error(exc) from exc


@dataclass(frozen=True, slots=True)
class AwsWakeUps:
    queue: SqsWakeUpQueue
    schedules: SchedulerWakeUps


@contextlib.asynccontextmanager
async def connect(region: str, endpoint_url: str | None) -> AsyncIterator[AwsWakeUps]:
    """The wake-up port on one pair of AWS clients, open while the context lasts."""
    async with (
        sqs_client(region, endpoint_url) as sqs,
        scheduler_client(region, endpoint_url) as scheduler,
    ):
        yield AwsWakeUps(SqsWakeUpQueue(sqs), SchedulerWakeUps(scheduler, region))
