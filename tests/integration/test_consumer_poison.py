"""Poison messages on the tasks queue, on a real moto server and a real PostgreSQL: a message
that does not decode, or names a series out of range, is malformed (deleted, counted, logged
without its body) and never holds back the good messages received with it. A receive cut
short (a database error, a stop) keeps the slots of the tasks it started and gives back what
it had not settled yet; the message keeper, restarted after a crash, still deletes what was
spent and extends what runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from structlog.testing import capture_logs

from scheduler_daemon.aws.adapter import SqsWakeUpQueue, connect
from scheduler_daemon.aws.clients import sqs_client
from scheduler_daemon.aws.codec import delivery, message_body
from scheduler_daemon.clock import SystemClock
from scheduler_daemon.domain.models import ClaimedTask, NewTask
from scheduler_daemon.engine.eventbridge import EventBridgeBackend, eventbridge_backend
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.limits import QueueLimiter
from scheduler_daemon.engine.sqs_consumer import ConsumerOptions, Messages
from scheduler_daemon.engine.wakeups import Delivery
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.settings import QueueLimits, Settings
from scheduler_daemon.store.outbox import PostgresOutboxStore
from scheduler_daemon.store.postgres import PostgresStore, create_pool
from tests.aws import REGION, ROLE_ARN, AwsResources, outage_proxy, queue_depth
from tests.fakes import FakeClock, claimed_task
from tests.integration.serve import eventually

VISIBILITY_S = 30  # far past each test: a message seen again early was made visible on purpose
SECRET = "poison-marker-7f3a"  # in the poison bodies: it must never reach a log line
# Poison for one real task: it names the task, with a series the claim could never take.
Poison = Callable[[uuid.UUID], str]

DECODE_POISON: dict[str, Poison] = {
    "lists-100000-deep": lambda _: "[" * 100_000 + f'"{SECRET}"' + "]" * 100_000,
    "series-2-to-the-32": lambda t: json.dumps({"task_id": str(t), "series": 4294967296}),
    "series-negative": lambda t: json.dumps({"task_id": str(t), "series": -1, "x": SECRET}),
    "series-true": lambda t: json.dumps({"task_id": str(t), "series": True, "x": SECRET}),
}
SHAPE_POISON: dict[str, Poison] = {
    "series-float": lambda t: json.dumps({"task_id": str(t), "series": 1.0, "x": SECRET}),
    "series-string": lambda t: json.dumps({"task_id": str(t), "series": "1", "x": SECRET}),
    "id-not-a-uuid": lambda _: json.dumps({"task_id": SECRET, "series": 1}),
    "missing-fields": lambda _: json.dumps({"x": SECRET}),
    "not-json": lambda _: "{" + SECRET,
    "objects-30000-deep": lambda _: '{"a":' * 30_000 + f'"{SECRET}"' + "}" * 30_000,
    "series-5000-digits": lambda t: f'{{"task_id": "{t}", "series": {"7" * 5000}}}',
}


@dataclass
class Rig:
    backend: EventBridgeBackend
    inflight: InFlight
    ready: asyncio.Queue[ClaimedTask]
    metrics: Metrics
    aws: AwsResources

    def count(self, result: str) -> float:
        value: float = self.metrics.sqs_messages.labels(result)._value.get()
        return value

    async def send(self, bodies: Sequence[str]) -> None:
        async with sqs_client(REGION, self.aws.endpoint_url) as sqs:
            for i in range(0, len(bodies), 10):
                entries: Any = [
                    {"Id": str(n), "MessageBody": b} for n, b in enumerate(bodies[i : i + 10])
                ]
                answer = await sqs.send_message_batch(QueueUrl=self.aws.queue_url, Entries=entries)
                assert not answer.get("Failed"), answer

    async def receive(self, count: int) -> list[Delivery]:
        """Exactly ``count`` messages, as the consumer's receive call would get them."""
        received: list[Delivery] = []
        async with sqs_client(REGION, self.aws.endpoint_url) as sqs:
            while len(received) < count:
                answer = await sqs.receive_message(
                    QueueUrl=self.aws.queue_url,
                    MaxNumberOfMessages=min(count - len(received), 10),
                    WaitTimeSeconds=1,
                    VisibilityTimeout=VISIBILITY_S,
                )
                received.extend(delivery(m) for m in answer.get("Messages", []))
        return received

    def started(self) -> list[uuid.UUID]:
        return [self.ready.get_nowait().id for _ in range(self.ready.qsize())]


def settings_for(aws: AwsResources) -> Settings:
    return Settings(
        scheduling={"backend": "eventbridge"},
        aws={"region": REGION, "endpoint_url": aws.endpoint_url},
        sqs={
            "queue_url": aws.queue_url,
            "wait_time_s": 1,
            "visibility_timeout_s": VISIBILITY_S,
            "pollers": 1,
        },
        eventbridge={"group": aws.group, "role_arn": ROLE_ARN},
    )


@contextlib.asynccontextmanager
async def rig_for(
    aws: AwsResources,
    outbox: PostgresOutboxStore,
    limits: dict[str, QueueLimits] | None = None,
) -> AsyncIterator[Rig]:
    clock = SystemClock()
    inflight = InFlight(10, clock)
    ready: asyncio.Queue[ClaimedTask] = asyncio.Queue()
    metrics = Metrics()
    settings = settings_for(aws)
    limiter = QueueLimiter(lambda: limits or {}, inflight, clock)
    async with connect(REGION, aws.endpoint_url) as wakeups:
        backend = eventbridge_backend(
            lambda: settings,
            wakeups.queue,
            wakeups.schedules,
            outbox,
            inflight,
            ready,
            "daemon-1",
            clock,
            metrics,
            limiter,
        )
        backend.consumer.signals.arm()
        keeper = asyncio.create_task(backend.messages.run())
        try:
            yield Rig(backend, inflight, ready, metrics, aws)
        finally:
            await stop(keeper)


@contextlib.asynccontextmanager
async def consuming(rig: Rig) -> AsyncIterator[asyncio.Task[None]]:
    """The consumer's own loop, stopped (as the supervisor stops it) on exit."""
    task = asyncio.create_task(rig.backend.consumer.run())
    try:
        yield task
    finally:
        await stop(task)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def first_receive_done(rig: Rig, consumer: asyncio.Task[None]) -> None:
    """Wait until the consumer's (one) poller has handled its first receive to the end, its
    reserved slots settled; fail at once if the consumer died instead."""
    polled = asyncio.ensure_future(rig.backend.consumer.signals.polled.next())
    try:
        done, _ = await asyncio.wait({polled, consumer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        polled.cancel()
    if consumer in done:
        consumer.result()  # raises what killed it
        pytest.fail("the consumer stopped")
    polled.result()  # no signal within the guard: fails the test


async def create_due(store: PostgresStore, n: int, queue: str = "default") -> list[uuid.UUID]:
    created = await store.create_tasks(
        [NewTask(action="noop", payload={}, queue=queue) for _ in range(n)]
    )
    return [task.id for task, _ in created]


async def statuses(store: PostgresStore, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    rows = await store.pool.fetch("SELECT id, status FROM tasks WHERE id = ANY($1)", list(ids))
    return {r["id"]: r["status"] for r in rows}


def assert_logged_without_bodies(logs: Sequence[Mapping[str, Any]], count: int) -> None:
    malformed = [e for e in logs if e["event"] == "message_malformed"]
    assert len(malformed) == count, malformed
    for event in malformed:
        assert "body" not in event
        assert event["message_id"]
        assert event["reason"]
    assert not any(SECRET in repr(e) for e in logs)
    assert not [e for e in logs if e["event"] == "receive_failed"]


@pytest.mark.parametrize("poison", [DECODE_POISON, SHAPE_POISON], ids=["decode", "shape"])
async def test_poison_in_a_receive_is_deleted_and_the_good_messages_are_claimed(
    store: PostgresStore, aws: AwsResources, poison: dict[str, Poison]
) -> None:
    good = await create_due(store, 10 - len(poison))
    (victim,) = await create_due(store, 1)  # named by the poison, with a series it never had
    bodies = [message_body(t, 1) for t in good] + [make(victim) for make in poison.values()]
    async with rig_for(aws, PostgresOutboxStore(store.pool)) as rig:
        await rig.send(bodies)
        received = await rig.receive(10)
        rig.inflight.reserve(10)  # as a poller does before its receive
        with capture_logs() as logs:
            kept = await rig.backend.consumer.handle(received)
        rig.inflight.unreserve(10 - kept)
        # Every good message of the receive started its task; the poison started nothing.
        assert kept == len(good)
        assert sorted(rig.started()) == sorted(good)
        assert set((await statuses(store, good)).values()) == {"running"}
        assert (await statuses(store, [victim]))[victim] == "scheduled"
        assert rig.count("malformed") == len(poison)
        assert rig.count("claimed") == len(good)
        assert_logged_without_bodies(logs, len(poison))
        # The poison is deleted; the good messages stay in flight while their tasks run ...
        await rig.backend.messages.flush()
        assert await queue_depth(aws) == (0, len(good))
        # ... and are deleted once their attempts are recorded.
        rig.backend.messages.recorded(good)
        await rig.backend.messages.flush()
        assert await queue_depth(aws) == (0, 0)


async def test_the_running_consumer_claims_the_good_messages_of_a_poisoned_receive(
    store: PostgresStore, aws: AwsResources
) -> None:
    good = await create_due(store, 6)
    (victim,) = await create_due(store, 1)
    poison = [make(victim) for make in DECODE_POISON.values()]
    async with rig_for(aws, PostgresOutboxStore(store.pool)) as rig:
        await rig.send([*poison[:2], *(message_body(t, 1) for t in good), *poison[2:]])
        with capture_logs() as logs:
            async with consuming(rig) as consumer:
                await first_receive_done(rig, consumer)
        # All in the first receive: none of the good ones waited for a visibility timeout.
        assert sorted(rig.started()) == sorted(good)
        assert rig.count("malformed") == len(poison)
        assert rig.inflight.in_use == len(good) == len(rig.inflight)
        assert_logged_without_bodies(logs, len(poison))
        await rig.backend.messages.flush()
        assert await queue_depth(aws) == (0, len(good))


QUEUE_LOCK = "SELECT pg_advisory_lock(hashtextextended('scheduler_daemon.queue:' || $1, 0))"


@contextlib.asynccontextmanager
async def queue_locked(database_url: str, queue: str) -> AsyncIterator[None]:
    """Another daemon in the middle of a claim in ``queue`` (it holds the queue's lock)."""
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(QUEUE_LOCK, queue)
        yield
    finally:
        await conn.close()


async def waiting_for_lock(pool: asyncpg.Pool) -> bool:
    waiting: int = await pool.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    return waiting > 0


async def test_a_database_error_mid_receive_keeps_the_slots_of_tasks_it_started(
    store: PostgresStore, aws: AwsResources, database_url: str
) -> None:
    # Claims in the globally limited queue wait for its lock, here for 100 ms at most.
    database = await store.pool.fetchval("SELECT current_database()")
    await store.pool.execute(f"ALTER DATABASE \"{database}\" SET lock_timeout = '100ms'")
    pool = await create_pool(database_url, 4)
    (free,) = await create_due(store, 1)
    (limited,) = await create_due(store, 1, queue="api")
    limits = {"api": QueueLimits(global_concurrency=1)}
    try:
        async with (
            rig_for(aws, PostgresOutboxStore(pool), limits) as rig,
            queue_locked(database_url, "api"),
        ):
            await rig.send([message_body(free, 1), message_body(limited, 1)])
            with capture_logs() as logs:
                async with consuming(rig) as consumer:
                    await first_receive_done(rig, consumer)
            failed = [e for e in logs if e["event"] == "receive_failed"]
            assert failed
            assert "LockNotAvailable" in failed[0]["error"]
            # The task that started keeps its slot; only the other reserved ones went back.
            assert rig.started() == [free]
            assert len(rig.inflight) == 1
            assert rig.inflight.in_use == 1
    finally:
        await pool.close()


async def test_a_stop_mid_receive_gives_back_the_unsettled_messages_at_once(
    store: PostgresStore, aws: AwsResources, database_url: str
) -> None:
    (free,) = await create_due(store, 1)
    (limited,) = await create_due(store, 1, queue="api")
    limits = {"api": QueueLimits(global_concurrency=1)}
    async with (
        rig_for(aws, PostgresOutboxStore(store.pool), limits) as rig,
        queue_locked(database_url, "api"),
    ):
        await rig.send([message_body(free, 1), message_body(limited, 1)])
        async with consuming(rig):
            first = await rig.ready.get()
            assert first.id == free
            # The limited task's claim waits for the queue's lock: stop the consumer then.
            await eventually(lambda: waiting_for_lock(store.pool))
        # Its message is visible again at once, not after the receive's 30 s.
        async with sqs_client(REGION, aws.endpoint_url) as sqs:
            answer = await sqs.receive_message(
                QueueUrl=aws.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
            )
        bodies = [json.loads(m["Body"]) for m in answer.get("Messages", [])]
        assert bodies == [{"task_id": str(limited), "series": 1}]
        assert (await statuses(store, [limited]))[limited] == "scheduled"
        assert rig.inflight.in_use == 1 == len(rig.inflight)


async def one_message(aws: AwsResources) -> str:
    """The receipt of a message sent and received (in flight for VISIBILITY_S)."""
    async with sqs_client(REGION, aws.endpoint_url) as sqs:
        await sqs.send_message(QueueUrl=aws.queue_url, MessageBody=message_body(uuid.uuid4(), 1))
        answer = await sqs.receive_message(
            QueueUrl=aws.queue_url, WaitTimeSeconds=1, VisibilityTimeout=VISIBILITY_S
        )
    (message,) = answer["Messages"]
    return message["ReceiptHandle"]


async def test_spent_messages_outlive_a_crash_of_the_keeper(aws: AwsResources) -> None:
    receipt = await one_message(aws)
    clock = SystemClock()
    options = ConsumerOptions(queue_url=aws.queue_url, visibility_timeout_s=VISIBILITY_S)
    async with outage_proxy(aws.endpoint_url) as proxy:
        await proxy.down()
        async with sqs_client(REGION, proxy.endpoint_url) as sqs:
            messages = Messages(SqsWakeUpQueue(sqs), InFlight(10, clock), clock, lambda: options)
            messages.discard(receipt)
            with capture_logs() as logs:
                keeper = asyncio.create_task(messages.run())

                async def delete_failed() -> bool:
                    return any(e["event"] == "message_delete_failed" for e in logs)

                # Stopped (as a crash of its other loop stops it) while the delete fails.
                await eventually(delete_failed)
                await stop(keeper)
            await proxy.up()
            # The supervisor runs the same keeper again: the message is still to delete.
            keeper = asyncio.create_task(messages.run())
            try:
                await messages.flush()
            finally:
                await stop(keeper)
    assert messages.deleted_total == 1
    assert await queue_depth(aws) == (0, 0)


async def test_a_restarted_keeper_extends_running_tasks_messages_first(aws: AwsResources) -> None:
    receipt = await one_message(aws)
    clock = FakeClock()
    task = claimed_task()
    inflight = InFlight(10, clock)
    inflight.admit([task])
    options = ConsumerOptions(queue_url=aws.queue_url, visibility_timeout_s=VISIBILITY_S)
    async with sqs_client(REGION, aws.endpoint_url) as sqs:
        messages = Messages(SqsWakeUpQueue(sqs), inflight, clock, lambda: options)
        messages.track(task.id, receipt)
        keeper = asyncio.create_task(messages.run())
        await clock.wait_for_sleepers(1)  # waiting a third of the timeout to extend
        await stop(keeper)
        # Restarted after a crash (the supervisor's backoff may have taken a while): the
        # extension comes before the first wait, not a third of the timeout later.
        with capture_logs() as logs:
            keeper = asyncio.create_task(messages.run())
            await clock.wait_for_sleepers(1)
            await stop(keeper)
    extended = [e for e in logs if e["event"] == "messages_extended"]
    assert [e["messages"] for e in extended] == [1]
    assert not [e for e in logs if e["event"].startswith("visibility_change")]
