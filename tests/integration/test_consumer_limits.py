"""The SQS consumer and queue limits, on a real moto server and a real PostgreSQL: wake-ups
of a paused queue or of a queue at its limit are deferred (made invisible for a while, their
tasks kept from being republished), never run early, never lost."""

from __future__ import annotations

import asyncio

from scheduler_daemon.aws.adapter import SqsWakeUpQueue
from scheduler_daemon.aws.clients import sqs_client
from scheduler_daemon.aws.codec import delivery, message_body
from scheduler_daemon.clock import SystemClock
from scheduler_daemon.domain.models import ClaimedTask, NewTask
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.limits import QueueLimiter
from scheduler_daemon.engine.sqs_consumer import Consumer, ConsumerOptions, Messages
from scheduler_daemon.engine.wakeups import WakeUp
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.settings import QueueLimits
from scheduler_daemon.store.outbox import PostgresOutboxStore
from scheduler_daemon.store.postgres import PostgresStore
from scheduler_daemon.store.queues import PostgresQueueStore
from tests.aws import REGION, AwsResources


async def test_paused_and_limited_wakeups_are_deferred(
    store: PostgresStore, aws: AwsResources
) -> None:
    queues = PostgresQueueStore(store.pool)
    created = await store.create_tasks(
        [NewTask(action="noop", payload={}, queue=q) for q in ("held", "api", "api", "api")]
    )
    paused_id, *api_ids = [task.id for task, _ in created]
    await queues.pause("held", "ops")
    clock = SystemClock()
    inflight = InFlight(10, clock)
    ready: asyncio.Queue[ClaimedTask] = asyncio.Queue()
    metrics = Metrics()
    limits = {"api": QueueLimits(concurrency=1)}
    options = ConsumerOptions(queue_url=aws.queue_url, wait_time_s=1, visibility_timeout_s=30)
    async with sqs_client(REGION, aws.endpoint_url) as sqs:
        consumer = Consumer(
            PostgresOutboxStore(store.pool),
            SqsWakeUpQueue(sqs),
            Messages(SqsWakeUpQueue(sqs), inflight, clock, lambda: options),
            inflight,
            ready,
            "daemon-1",
            clock,
            lambda: options,
            lease_s=lambda: 30.0,
            metrics=metrics,
            limiter=QueueLimiter(lambda: limits, inflight, clock),
        )
        for task_id in [paused_id, *api_ids]:
            await sqs.send_message(QueueUrl=aws.queue_url, MessageBody=message_body(task_id, 1))
        received: list[WakeUp] = []
        while len(received) < 4:
            answer = await sqs.receive_message(
                QueueUrl=aws.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for m in answer.get("Messages", []):
                wakeup = delivery(m)
                assert isinstance(wakeup, WakeUp)
                received.append(wakeup)
        inflight.reserve(4)  # as a poller does before its receive
        kept = await consumer.dispatch(received)
        inflight.unreserve(4 - kept)
        # One api task runs (its limit is 1); the other two and the paused one wait.
        assert kept == 1
        assert ready.qsize() == 1
        (started,) = [ready.get_nowait()]
        assert started.id in api_ids
        assert inflight.running_in("api") == 1
        deferred = metrics.sqs_messages.labels("deferred")._value.get()
        assert deferred == 3
        # Deferred messages are invisible for a while, not deleted, not run.
        answer = await sqs.receive_message(
            QueueUrl=aws.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        assert answer.get("Messages", []) == []
        attrs = await sqs.get_queue_attributes(
            QueueUrl=aws.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )
        assert attrs["Attributes"]["ApproximateNumberOfMessagesNotVisible"] == "4"
    rows = await store.pool.fetch(
        "SELECT id, status, published_at FROM tasks WHERE id = ANY($1::uuid[])",
        [paused_id, *api_ids],
    )
    by_id = {r["id"]: r for r in rows}
    assert by_id[paused_id]["status"] == "scheduled"
    assert by_id[paused_id]["published_at"] is not None  # alive: not republished
    assert sorted(r["status"] for r in rows) == ["running", "scheduled", "scheduled", "scheduled"]
