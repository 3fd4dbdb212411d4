"""The SQS consumer claims only the actions its daemon runs, on a real moto server and a real
PostgreSQL: a wake-up of another action is deferred (made invisible for a while, its task kept
from being republished), never claimed, never lost."""

from __future__ import annotations

import asyncio

from scheduler_daemon.aws.adapter import SqsWakeUpQueue
from scheduler_daemon.aws.clients import sqs_client
from scheduler_daemon.aws.codec import delivery, message_body
from scheduler_daemon.clock import SystemClock
from scheduler_daemon.domain.models import ClaimedTask, NewTask, TaskStatus
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.sqs_consumer import Consumer, ConsumerOptions, Messages
from scheduler_daemon.engine.wakeups import WakeUp
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.store.outbox import PostgresOutboxStore
from scheduler_daemon.store.postgres import PostgresStore
from tests.aws import REGION, AwsResources


async def test_a_wakeup_of_an_action_this_daemon_does_not_run_is_deferred(
    store: PostgresStore, aws: AwsResources
) -> None:
    created = await store.create_tasks(
        [NewTask(action="noop", payload={}), NewTask(action="reports.build", payload={})]
    )
    runnable_id, other_id = [task.id for task, _ in created]
    clock = SystemClock()
    inflight = InFlight(10, clock)
    ready: asyncio.Queue[ClaimedTask] = asyncio.Queue()
    metrics = Metrics()
    options = ConsumerOptions(queue_url=aws.queue_url, wait_time_s=1, visibility_timeout_s=30)
    async with sqs_client(REGION, aws.endpoint_url) as sqs:
        consumer = Consumer(
            PostgresOutboxStore(store.pool, runnable=["noop", "webhook"]),
            SqsWakeUpQueue(sqs),
            Messages(SqsWakeUpQueue(sqs), inflight, clock, lambda: options),
            inflight,
            ready,
            "daemon-1",
            clock,
            lambda: options,
            lease_s=lambda: 30.0,
            metrics=metrics,
        )
        for task_id in (runnable_id, other_id):
            await sqs.send_message(QueueUrl=aws.queue_url, MessageBody=message_body(task_id, 1))
        received: list[WakeUp] = []
        while len(received) < 2:
            answer = await sqs.receive_message(
                QueueUrl=aws.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
            for m in answer.get("Messages", []):
                wakeup = delivery(m)
                assert isinstance(wakeup, WakeUp)
                received.append(wakeup)
        inflight.reserve(2)  # as a poller does before its receive
        kept = await consumer.dispatch(received)
        inflight.unreserve(2 - kept)
        assert kept == 1
        assert ready.get_nowait().id == runnable_id
        assert metrics.sqs_messages.labels("deferred")._value.get() == 1
        other = await store.get_task(other_id)
        assert other is not None
        assert (other.status, other.attempts) == (TaskStatus.SCHEDULED, 0)
        # Invisible for a while, not deleted.
        answer = await sqs.receive_message(
            QueueUrl=aws.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0
        )
        assert answer.get("Messages", []) == []
        attributes = await sqs.get_queue_attributes(
            QueueUrl=aws.queue_url, AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
        )
        assert int(attributes["Attributes"]["ApproximateNumberOfMessagesNotVisible"]) >= 1
