"""Heartbeat: renew every lease the in-flight ledger holds, abort the lost, spare the finished."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scheduler_daemon.domain.models import ClaimedTask
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.leases import Heartbeat
from tests.fakes import FakeClock, FakeEngineStore, claimed_task

OWNER = "host/1/abc"
LEASE_S = 30.0
INTERVAL_S = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def inflight(clock: FakeClock) -> InFlight:
    return InFlight(100, clock)


@pytest.fixture
def store() -> FakeEngineStore:
    return FakeEngineStore()


@pytest.fixture
def heartbeat(store: FakeEngineStore, inflight: InFlight, clock: FakeClock) -> Heartbeat:
    return Heartbeat(store, inflight, OWNER, clock, lambda: LEASE_S, lambda: INTERVAL_S)


def pending_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def hold(inflight: InFlight, n: int, **kwargs: Any) -> list[ClaimedTask]:
    tasks = [claimed_task(**kwargs) for _ in range(n)]
    for task in tasks:
        inflight.admit([task])
    return tasks


# --- Heartbeat.beat ------------------------------------------------------------------------


async def test_beat_with_nothing_held_does_not_call_the_store(
    heartbeat: Heartbeat, store: FakeEngineStore
) -> None:
    assert await heartbeat.beat() == set()
    assert store.renew_calls == []


async def test_beat_renews_every_held_lease(
    heartbeat: Heartbeat, store: FakeEngineStore, inflight: InFlight
) -> None:
    tasks = hold(inflight, 3, attempt=2)
    assert await heartbeat.beat() == set()
    assert len(store.renew_calls) == 1
    call = store.renew_calls[0]
    assert call.owner == OWNER
    assert call.lease_s == LEASE_S
    assert call.held == tuple((t.id, 2) for t in tasks)
    assert len(inflight) == 3


async def test_beat_aborts_lost_leases(
    heartbeat: Heartbeat, store: FakeEngineStore, inflight: InFlight
) -> None:
    kept, lost_running, lost_idle = hold(inflight, 3)
    running = {t.id: pending_future() for t in (kept, lost_running)}
    for task_id, fut in running.items():
        inflight.attach(task_id, fut)
    store.keep = lambda task_id, _attempt: task_id == kept.id

    lost = await heartbeat.beat()

    assert lost == {lost_running.id, lost_idle.id}
    assert running[lost_running.id].cancelled()
    assert not running[kept.id].cancelled()
    assert inflight.snapshot() == [(kept.id, kept.attempt)]
    running[kept.id].cancel()


async def test_lost_attempt_task_is_cancelled(
    heartbeat: Heartbeat, store: FakeEngineStore, inflight: InFlight
) -> None:
    (task,) = hold(inflight, 1)
    started = asyncio.Event()

    async def attempt() -> None:
        started.set()
        await asyncio.Event().wait()  # a webhook that never answers

    running = asyncio.ensure_future(attempt())
    inflight.attach(task.id, running)
    await started.wait()
    store.keep = lambda _id, _attempt: False
    assert await heartbeat.beat() == {task.id}
    with pytest.raises(asyncio.CancelledError):
        await running
    assert running.cancelled()


async def test_ids_discarded_during_renewal_are_not_lost(
    heartbeat: Heartbeat, store: FakeEngineStore, inflight: InFlight
) -> None:
    kept, finished, lost_task = hold(inflight, 3)
    fut = pending_future()
    inflight.attach(lost_task.id, fut)
    # The completer records ``finished`` while the renewal is in flight: the store no longer
    # renews it (its lease was released), but it is not lost.
    store.keep = lambda task_id, _attempt: task_id == kept.id
    store.during_renew = lambda: inflight.release([finished.id])

    lost = await heartbeat.beat()

    assert lost == {lost_task.id}
    assert fut.cancelled()
    assert inflight.snapshot() == [(kept.id, kept.attempt)]


async def test_reclaimed_task_is_not_aborted_by_the_old_attempts_renewal(
    heartbeat: Heartbeat, store: FakeEngineStore, inflight: InFlight
) -> None:
    first = claimed_task(attempt=1)
    inflight.admit([first])
    second = claimed_task(task_id=first.id, attempt=2)
    fut = pending_future()

    def recorded_and_reclaimed() -> None:
        inflight.release([first.id])  # attempt 1 recorded: retry due at once
        inflight.admit([second])  # discovery claims attempt 2
        inflight.attach(second.id, fut)

    # The store renews by (id, attempt): attempt 1's lease no longer exists.
    store.keep = lambda _id, attempt: attempt == 2
    store.during_renew = recorded_and_reclaimed

    lost = await heartbeat.beat()

    assert lost == set()
    assert not fut.cancelled()
    assert inflight.snapshot() == [(second.id, 2)]
    fut.cancel()


async def test_beat_aborts_overdue_attempts_without_renewing_them(
    heartbeat: Heartbeat, store: FakeEngineStore, inflight: InFlight, clock: FakeClock
) -> None:
    (stuck,) = hold(inflight, 1, timeout_s=5.0)
    fut = pending_future()
    inflight.attach(stuck.id, fut)
    await clock.advance(5.0 + LEASE_S - 1.0)
    (fresh,) = hold(inflight, 1, timeout_s=5.0)
    await clock.advance(2.0)  # stuck is now past timeout + one lease; fresh is not

    await heartbeat.beat()

    assert fut.cancelled()
    assert store.renew_calls[-1].held == ((fresh.id, fresh.attempt),)
    assert inflight.snapshot() == [(fresh.id, fresh.attempt)]


# --- Heartbeat.run -------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def running(heartbeat: Heartbeat) -> AsyncIterator[None]:
    task = asyncio.create_task(heartbeat.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_run_beats_every_interval(
    heartbeat: Heartbeat, store: FakeEngineStore, inflight: InFlight, clock: FakeClock
) -> None:
    hold(inflight, 2)
    async with running(heartbeat):
        await clock.wait_for_sleepers(1)
        assert store.renew_calls == []
        await clock.advance(INTERVAL_S - 0.1)
        assert store.renew_calls == []
        await clock.advance(0.1)
        assert len(store.renew_calls) == 1
        await clock.advance(2 * INTERVAL_S)
        assert len(store.renew_calls) == 3
        await clock.wait_for_sleepers(1)
        assert clock.deadlines == [INTERVAL_S]  # the next beat, one interval on


# --- Heartbeat with an abort handed to the loop later ----------------------------------------


class DeferredAborts:
    """Aborts as the lease keeper makes them: recorded now, done on the loop later."""

    def __init__(self, inflight: InFlight) -> None:
        self.inflight = inflight
        self.asked: list[tuple[uuid.UUID, int]] = []

    def __call__(self, task_id: uuid.UUID, attempt: int) -> None:
        self.asked.append((task_id, attempt))

    def run(self) -> None:
        for task_id, attempt in self.asked:
            self.inflight.abort(task_id, attempt)


async def test_beat_hands_lost_leases_to_its_abort_once(
    store: FakeEngineStore, inflight: InFlight, clock: FakeClock
) -> None:
    aborts = DeferredAborts(inflight)
    heartbeat = Heartbeat(
        store, inflight, OWNER, clock, lambda: LEASE_S, lambda: INTERVAL_S, abort=aborts
    )
    kept, lost = hold(inflight, 2)
    store.keep = lambda task_id, _attempt: task_id == kept.id

    assert await heartbeat.beat() == {lost.id}
    assert aborts.asked == [(lost.id, lost.attempt)]
    assert lost.id in inflight  # not aborted yet: the loop has not run the abort

    # The next round does not renew it again, nor report it twice.
    assert await heartbeat.beat() == set()
    assert store.renew_calls[-1].held == ((kept.id, kept.attempt),)
    assert aborts.asked == [(lost.id, lost.attempt)]

    aborts.run()
    assert inflight.snapshot() == [(kept.id, kept.attempt)]


async def test_beat_does_not_renew_an_overdue_attempt_whose_abort_is_pending(
    store: FakeEngineStore, inflight: InFlight, clock: FakeClock
) -> None:
    aborts = DeferredAborts(inflight)
    heartbeat = Heartbeat(
        store, inflight, OWNER, clock, lambda: LEASE_S, lambda: INTERVAL_S, abort=aborts
    )
    (stuck,) = hold(inflight, 1, timeout_s=5.0)
    await clock.advance(5.0 + LEASE_S + 1.0)
    (fresh,) = hold(inflight, 1, timeout_s=5.0)

    await heartbeat.beat()
    await heartbeat.beat()

    assert aborts.asked == [(stuck.id, stuck.attempt)]
    assert [call.held for call in store.renew_calls] == [((fresh.id, fresh.attempt),)] * 2
    aborts.run()
    assert inflight.snapshot() == [(fresh.id, fresh.attempt)]
