"""The eventbridge backend's loops assembled from settings: the outbox publisher, the SQS
consumer and its message keeper, on one wake-up port (``engine/wakeups.py``; the AWS adapter
of ``scheduler_daemon.aws.adapter`` in the daemon)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from scheduler_daemon.clock import Clock
from scheduler_daemon.domain.models import ClaimedTask
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.limits import QueueLimiter
from scheduler_daemon.engine.outbox_publisher import Publisher, PublisherOptions
from scheduler_daemon.engine.sqs_consumer import Consumer, ConsumerOptions, Messages
from scheduler_daemon.engine.wakeups import WakeUpQueue, WakeUpSchedules
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.settings import Settings
from scheduler_daemon.store.base import OutboxStore


def publisher_options(s: Settings) -> PublisherOptions:
    eb = s.eventbridge
    return PublisherOptions(
        queue_url=s.sqs.queue_url or "",
        target_arn=eb.target_arn,
        group=eb.group,
        role_arn=eb.role_arn or "",
        dead_letter_arn=eb.dead_letter_arn,
        schedule_after_s=eb.schedule_after_s,
        lead_s=eb.lead_s,
        max_retry_attempts=eb.max_retry_attempts,
        max_event_age_s=eb.max_event_age_s,
        batch_size=eb.publish_batch_size,
        republish_after_s=eb.republish_after_s,
    )


def consumer_options(s: Settings) -> ConsumerOptions:
    return ConsumerOptions(
        queue_url=s.sqs.queue_url or "",
        wait_time_s=s.sqs.wait_time_s,
        visibility_timeout_s=s.sqs.visibility_timeout_s,
        pollers=s.sqs.pollers,
    )


@dataclass
class EventBridgeBackend:
    publisher: Publisher
    consumer: Consumer
    messages: Messages

    async def drained(self, released: list[uuid.UUID], timeout_s: float) -> None:
        """After shutdown's release: messages of tasks put back are visible at once, spent
        ones deleted."""
        await self.messages.make_visible(released)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await self.messages.flush()


def eventbridge_backend(
    settings: Callable[[], Settings],
    queue: WakeUpQueue,
    schedules: WakeUpSchedules,
    outbox: OutboxStore,
    inflight: InFlight,
    ready: asyncio.Queue[ClaimedTask],
    owner: str,
    clock: Clock,
    metrics: Metrics | None = None,
    limiter: QueueLimiter | None = None,
) -> EventBridgeBackend:
    messages = Messages(queue, inflight, clock, lambda: consumer_options(settings()))
    return EventBridgeBackend(
        publisher=Publisher(
            outbox,
            queue,
            schedules,
            lambda: publisher_options(settings()),
            clock,
            poll_interval_s=lambda: settings().discovery.poll_interval_s,
            metrics=metrics,
        ),
        consumer=Consumer(
            outbox,
            queue,
            messages,
            inflight,
            ready,
            owner,
            clock,
            lambda: consumer_options(settings()),
            lease_s=lambda: settings().executor.lease_s,
            metrics=metrics,
            limiter=limiter,
        ),
        messages=messages,
    )
