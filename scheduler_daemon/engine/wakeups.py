"""The port of the eventbridge backend's loops: a queue of wake-up messages and a service of
one-time schedules that send a wake-up to that queue at a given time.

The outbox publisher (``engine/outbox_publisher.py``) sends wake-ups and creates schedules; the
SQS consumer (``engine/sqs_consumer.py``) receives wake-ups, keeps them invisible while their
tasks run and deletes them once recorded. ``scheduler_daemon.aws`` implements the port with SQS
and EventBridge Scheduler (``aws/adapter.py``): the message format, the AWS requests and the
SDK's errors stay there, and the SDK loads only where that adapter is used.

Every operation raises ``RemoteError`` when the call fails as a whole (unreachable, timed out,
throttled, refused); a batch call reports the entries refused one by one as ``Refused``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

MAX_BATCH = 10  # the most entries a batch call takes (and messages a receive brings)


class RemoteError(Exception):
    """A call to the queue or schedule service failed. ``kind`` names the error as the
    service's client raised it, ``code`` is the service's error code ("" for a transport
    error), ``throttled`` whether the service asked to slow down."""

    def __init__(self, message: str, *, kind: str, code: str = "", throttled: bool = False):
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.throttled = throttled


def describe_error(exc: BaseException) -> str:
    """``Kind code: message`` for a log line (the kind alone without a code)."""
    if isinstance(exc, RemoteError):
        kind, code = exc.kind, exc.code
    else:
        kind, code = type(exc).__name__, ""
    return f"{kind}{f' {code}' if code else ''}: {exc}"


@dataclass(frozen=True, slots=True)
class WakeUp:
    """A received message that is a wake-up: the task and the scheduling (its
    ``wake_version``, the message's series) it was published for."""

    receipt: str
    task_id: uuid.UUID
    series: int


@dataclass(frozen=True, slots=True)
class Malformed:
    """A received message that is not a wake-up; ``reason`` never quotes its body."""

    receipt: str
    message_id: str | None
    reason: str
    body_chars: int


Delivery = WakeUp | Malformed


@dataclass(frozen=True, slots=True)
class Refused:
    """One entry of a batch call that the service refused."""

    code: str | None
    message: str | None


@dataclass(frozen=True, slots=True)
class OutgoingWakeUp:
    """A wake-up to send now, delivered about ``due_in_s`` from now (never later)."""

    task_id: uuid.UUID
    version: int
    due_in_s: float


@dataclass(frozen=True, slots=True)
class ScheduleTarget:
    """Where and how a schedule delivers its wake-up. ``arn`` None: the wake-up queue."""

    queue_url: str
    group: str
    role_arn: str
    arn: str | None = None
    dead_letter_arn: str | None = None
    max_retry_attempts: int = 185
    max_event_age_s: int = 86_400


class WakeUpQueue(Protocol):
    """The queue the wake-ups travel through (SQS)."""

    async def receive(
        self, queue_url: str, max_messages: int, wait_s: int, visibility_s: int
    ) -> list[Delivery]:
        """Long-poll for up to ``max_messages``; each becomes invisible for ``visibility_s``."""
        ...

    async def change_visibility(
        self, queue_url: str, changes: Sequence[tuple[str, int]]
    ) -> list[Refused]:
        """(receipt, seconds) each: visible again that many seconds from now (at most
        ``MAX_BATCH`` a call)."""
        ...

    async def delete(self, queue_url: str, receipts: Sequence[str]) -> tuple[int, list[Refused]]:
        """Delete received messages (at most ``MAX_BATCH``); how many were, and the refusals."""
        ...

    async def send(
        self, queue_url: str, wakeups: Sequence[OutgoingWakeUp]
    ) -> tuple[list[int], list[Refused]]:
        """Send wake-ups (at most ``MAX_BATCH``); the positions of those sent, and the
        refusals."""
        ...


class WakeUpSchedules(Protocol):
    """One-time schedules that send a wake-up to the queue at their time (EventBridge
    Scheduler)."""

    async def create(
        self, task_id: uuid.UUID, version: int, fire_at: datetime, target: ScheduleTarget
    ) -> str:
        """Make the schedule of this scheduling of the task, firing at ``fire_at`` (never
        before), deleted once it fired; return its name. Idempotent: the name is derived from
        (task, version), and a schedule that already has it is this one."""
        ...

    async def delete(self, name: str, group: str) -> None:
        """Delete a schedule; one that is gone already (fired, or never made) is done too."""
        ...
