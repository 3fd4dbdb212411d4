"""LISTEN/NOTIFY: inserts wake discovery at once; the listener survives losing its connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from scheduler_daemon.clock import SystemClock
from scheduler_daemon.domain.models import ClaimedTask, NewTask
from scheduler_daemon.engine.discovery import Discovery
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.signals import DiscoverySignals
from scheduler_daemon.store.listener import LISTENER_APPLICATION_NAME, NotificationListener
from scheduler_daemon.store.postgres import PostgresStore


class Recorder:
    """Collects notifications and lets a test await the next one."""

    def __init__(self) -> None:
        self.seen: list[float | None] = []
        self._queue: asyncio.Queue[float | None] = asyncio.Queue()

    def __call__(self, delay: float | None) -> None:
        self.seen.append(delay)
        self._queue.put_nowait(delay)

    async def next(self, timeout: float = 10.0) -> float | None:
        async with asyncio.timeout(timeout):
            return await self._queue.get()


@pytest.fixture
async def listener(
    database_url: str,
) -> AsyncIterator[tuple[NotificationListener, Recorder, asyncio.Task[None]]]:
    recorder = Recorder()
    listener = NotificationListener(database_url, recorder, SystemClock(), check_interval_s=0.5)
    task = asyncio.create_task(listener.run())
    assert await recorder.next() is None  # the "look now" sent on connect
    yield listener, recorder, task
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_insert_notifies_with_delay(
    listener: tuple[NotificationListener, Recorder, asyncio.Task[None]], store: PostgresStore
) -> None:
    _, recorder, _ = listener
    await store.create_task(NewTask(action="noop", payload={}))
    due_now = await recorder.next()
    assert due_now is not None
    assert due_now <= 0.05
    await store.create_task(NewTask(action="noop", payload={}, delay_s=30))
    later = await recorder.next()
    assert later is not None
    assert 20 < later <= 30


async def test_far_future_insert_is_not_announced(
    listener: tuple[NotificationListener, Recorder, asyncio.Task[None]], store: PostgresStore
) -> None:
    _, recorder, _ = listener
    await store.create_task(NewTask(action="noop", payload={}, delay_s=7200))
    await store.create_task(NewTask(action="noop", payload={}, delay_s=45))
    # The first notification to arrive is the second insert's: the first sent none.
    delay = await recorder.next()
    assert delay is not None
    assert 35 < delay <= 45
    assert recorder.seen == [None, delay]


async def test_one_notification_per_bulk_insert(
    listener: tuple[NotificationListener, Recorder, asyncio.Task[None]], store: PostgresStore
) -> None:
    _, recorder, _ = listener
    await store.create_tasks(
        [NewTask(action="noop", payload={}, delay_s=20 + i / 100) for i in range(500)]
    )
    first = await recorder.next()
    assert first is not None
    assert 10 < first <= 20  # the earliest of the batch
    # A later notification proves nothing else was queued in between.
    await store.create_task(NewTask(action="noop", payload={}, delay_s=50))
    marker = await recorder.next()
    assert marker is not None
    assert marker > 40


async def test_rescheduled_retry_notifies(
    listener: tuple[NotificationListener, Recorder, asyncio.Task[None]],
    store: PostgresStore,
    pool: asyncpg.Pool,
) -> None:
    _, recorder, _ = listener
    await store.create_task(NewTask(action="noop", payload={}, delay_s=7200))  # not announced
    await pool.execute("UPDATE tasks SET run_at = now() + interval '10 s'")
    moved = await recorder.next()
    assert moved is not None
    assert 5 < moved <= 10


async def test_listener_reconnects_after_terminate(
    listener: tuple[NotificationListener, Recorder, asyncio.Task[None]],
    store: PostgresStore,
    pool: asyncpg.Pool,
) -> None:
    lst, recorder, _ = listener
    killed = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = $1 AND datname = current_database()",
        LISTENER_APPLICATION_NAME,
    )
    assert killed == 1
    # After reconnecting it asks discovery to look (it may have missed notifications).
    assert await recorder.next() is None
    assert lst.reconnects == 1
    assert lst.connected.is_set()
    await store.create_task(NewTask(action="noop", payload={}))
    delay = await recorder.next()
    assert delay is not None
    assert delay <= 0.05


async def test_discovery_wakes_on_insert_not_on_poll(
    database_url: str, store: PostgresStore
) -> None:
    ready: asyncio.Queue[ClaimedTask] = asyncio.Queue()
    inflight = InFlight(4, SystemClock())
    discovery = Discovery(
        store,
        inflight,
        ready,
        "me",
        SystemClock(),
        batch_size=lambda: 10,
        poll_interval_s=lambda: 3600.0,  # only a notification can wake it in time
        lease_s=lambda: 30.0,
        signals=DiscoverySignals().arm(),
    )
    listener = NotificationListener(database_url, discovery.notify, SystemClock())
    tasks = [asyncio.create_task(listener.run()), asyncio.create_task(discovery.run())]
    try:
        async with asyncio.timeout(10):
            await listener.connected.wait()
            # Discovery found nothing and settled into its hour-long sleep.
            assert await discovery.signals.claimed.next() == 0
            assert await discovery.signals.slept.next() > 3000.0
        assert discovery.claimed_total == 0
        task, _ = await store.create_task(NewTask(action="noop", payload={}))
        async with asyncio.timeout(10):
            claimed = await ready.get()
        assert claimed.id == task.id
        assert len(inflight) == 1
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
