"""LeaseRegistry bookkeeping and Heartbeat: renew all, abort the lost, spare the finished."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from scheduler_daemon.domain.models import ClaimedTask
from scheduler_daemon.engine.leases import Heartbeat, LeaseRegistry
from tests.fakes import FakeClock, FakeEngineStore, claimed_task, settle

OWNER = "host/1/abc"
LEASE_S = 30.0
INTERVAL_S = 10.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def registry(clock: FakeClock) -> LeaseRegistry:
    return LeaseRegistry(clock)


@pytest.fixture
def store() -> FakeEngineStore:
    return FakeEngineStore()


@pytest.fixture
def heartbeat(store: FakeEngineStore, registry: LeaseRegistry, clock: FakeClock) -> Heartbeat:
    return Heartbeat(store, registry, OWNER, clock, lambda: LEASE_S, lambda: INTERVAL_S)


def pending_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def hold(registry: LeaseRegistry, n: int, **kwargs: Any) -> list[ClaimedTask]:
    tasks = [claimed_task(**kwargs) for _ in range(n)]
    for task in tasks:
        registry.add(task)
    return tasks


# --- LeaseRegistry -----------------------------------------------------------------------


def test_registry_add_and_snapshot(registry: LeaseRegistry) -> None:
    a = claimed_task(attempt=1)
    b = claimed_task(attempt=3, max_attempts=5)
    registry.add(a)
    registry.add(b)
    assert len(registry) == 2
    assert registry.snapshot() == [(a.id, 1), (b.id, 3)]


def test_registry_discard(registry: LeaseRegistry) -> None:
    a, b = hold(registry, 2)
    registry.discard(a.id)
    registry.discard(uuid.uuid4())  # unknown: no error
    assert registry.snapshot() == [(b.id, b.attempt)]


async def test_registry_attach_and_detach(registry: LeaseRegistry) -> None:
    (a,) = hold(registry, 1)
    fut = pending_future()
    held = registry.attach(a.id, fut)
    assert held is not None
    assert held.task == a
    assert held.running is fut
    assert not held.lost
    registry.detach(a.id)
    assert held.running is None
    registry.abort(a.id)
    assert not fut.cancelled()  # detached: abort no longer reaches it
    fut.cancel()


async def test_registry_attach_to_unknown_task_returns_none(registry: LeaseRegistry) -> None:
    fut = pending_future()
    assert registry.attach(uuid.uuid4(), fut) is None
    assert len(registry) == 0
    fut.cancel()


async def test_registry_abort_cancels_the_attempt_and_forgets_it(registry: LeaseRegistry) -> None:
    a, b = hold(registry, 2)
    fut = pending_future()
    held = registry.attach(a.id, fut)
    assert held is not None
    registry.abort(a.id)
    assert fut.cancelled()
    assert held.lost
    assert registry.snapshot() == [(b.id, b.attempt)]
    assert registry.attach(a.id, pending_future()) is None


def test_registry_abort_without_attempt_or_unknown(registry: LeaseRegistry) -> None:
    (a,) = hold(registry, 1)
    registry.abort(a.id)  # claimed but not started yet
    registry.abort(a.id)  # twice: no error
    registry.abort(uuid.uuid4())
    assert len(registry) == 0


async def test_registry_overdue(registry: LeaseRegistry, clock: FakeClock) -> None:
    (short,) = hold(registry, 1, timeout_s=5.0)
    (long,) = hold(registry, 1, timeout_s=60.0)
    await clock.advance(5.0 + 30.0)
    assert registry.overdue(grace_s=30.0) == []  # exactly at the limit: not yet
    await clock.advance(0.5)
    assert registry.overdue(grace_s=30.0) == [short.id]
    await clock.advance(60.0)
    assert sorted(registry.overdue(grace_s=30.0)) == sorted([short.id, long.id])


# --- Heartbeat.beat ------------------------------------------------------------------------


async def test_beat_with_nothing_held_does_not_call_the_store(
    heartbeat: Heartbeat, store: FakeEngineStore
) -> None:
    assert await heartbeat.beat() == set()
    assert store.renew_calls == []


async def test_beat_renews_every_held_lease(
    heartbeat: Heartbeat, store: FakeEngineStore, registry: LeaseRegistry
) -> None:
    tasks = hold(registry, 3, attempt=2)
    assert await heartbeat.beat() == set()
    assert len(store.renew_calls) == 1
    call = store.renew_calls[0]
    assert call.owner == OWNER
    assert call.lease_s == LEASE_S
    assert call.held == tuple((t.id, 2) for t in tasks)
    assert len(registry) == 3


async def test_beat_aborts_lost_leases(
    heartbeat: Heartbeat, store: FakeEngineStore, registry: LeaseRegistry
) -> None:
    kept, lost_running, lost_idle = hold(registry, 3)
    running = {t.id: pending_future() for t in (kept, lost_running)}
    for task_id, fut in running.items():
        registry.attach(task_id, fut)
    store.keep = lambda task_id, _attempt: task_id == kept.id

    lost = await heartbeat.beat()

    assert lost == {lost_running.id, lost_idle.id}
    assert running[lost_running.id].cancelled()
    assert not running[kept.id].cancelled()
    assert registry.snapshot() == [(kept.id, kept.attempt)]
    running[kept.id].cancel()


async def test_lost_attempt_task_is_cancelled(
    heartbeat: Heartbeat, store: FakeEngineStore, registry: LeaseRegistry
) -> None:
    (task,) = hold(registry, 1)
    started = asyncio.Event()

    async def attempt() -> None:
        started.set()
        await asyncio.Event().wait()  # a webhook that never answers

    running = asyncio.ensure_future(attempt())
    registry.attach(task.id, running)
    await started.wait()
    store.keep = lambda _id, _attempt: False
    assert await heartbeat.beat() == {task.id}
    with pytest.raises(asyncio.CancelledError):
        await running
    assert running.cancelled()


async def test_ids_discarded_during_renewal_are_not_lost(
    heartbeat: Heartbeat, store: FakeEngineStore, registry: LeaseRegistry
) -> None:
    kept, finished, lost_task = hold(registry, 3)
    fut = pending_future()
    registry.attach(lost_task.id, fut)
    # The completer records ``finished`` while the renewal is in flight: the store no longer
    # renews it (its lease was released), but it is not lost.
    store.keep = lambda task_id, _attempt: task_id == kept.id
    store.during_renew = lambda: registry.discard(finished.id)

    lost = await heartbeat.beat()

    assert lost == {lost_task.id}
    assert fut.cancelled()
    assert registry.snapshot() == [(kept.id, kept.attempt)]


async def test_reclaimed_task_is_not_aborted_by_the_old_attempts_renewal(
    heartbeat: Heartbeat, store: FakeEngineStore, registry: LeaseRegistry
) -> None:
    first = claimed_task(attempt=1)
    registry.add(first)
    second = claimed_task(task_id=first.id, attempt=2)
    fut = pending_future()

    def recorded_and_reclaimed() -> None:
        registry.discard(first.id)  # attempt 1 recorded: retry due at once
        registry.add(second)  # discovery claims attempt 2
        registry.attach(second.id, fut)

    # The store renews by (id, attempt): attempt 1's lease no longer exists.
    store.keep = lambda _id, attempt: attempt == 2
    store.during_renew = recorded_and_reclaimed

    lost = await heartbeat.beat()

    assert lost == set()
    assert not fut.cancelled()
    assert registry.snapshot() == [(second.id, 2)]
    fut.cancel()


async def test_beat_aborts_overdue_attempts_without_renewing_them(
    heartbeat: Heartbeat, store: FakeEngineStore, registry: LeaseRegistry, clock: FakeClock
) -> None:
    (stuck,) = hold(registry, 1, timeout_s=5.0)
    fut = pending_future()
    registry.attach(stuck.id, fut)
    await clock.advance(5.0 + LEASE_S - 1.0)
    (fresh,) = hold(registry, 1, timeout_s=5.0)
    await clock.advance(2.0)  # stuck is now past timeout + one lease; fresh is not

    await heartbeat.beat()

    assert fut.cancelled()
    assert store.renew_calls[-1].held == ((fresh.id, fresh.attempt),)
    assert registry.snapshot() == [(fresh.id, fresh.attempt)]


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
    heartbeat: Heartbeat, store: FakeEngineStore, registry: LeaseRegistry, clock: FakeClock
) -> None:
    hold(registry, 2)
    async with running(heartbeat):
        await clock.wait_for_sleepers(1)
        assert store.renew_calls == []
        await clock.advance(INTERVAL_S - 0.1)
        assert store.renew_calls == []
        await clock.advance(0.1)
        assert len(store.renew_calls) == 1
        await clock.advance(2 * INTERVAL_S)
        assert len(store.renew_calls) == 3
        await settle()
        assert clock.sleepers == 1


# --- reading the registry from another thread, aborting a given attempt --------------------


def test_registry_reads_are_safe_from_another_thread(registry: LeaseRegistry) -> None:
    """The lease keeper's thread reads while the loop adds and discards."""
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                registry.snapshot()
                registry.overdue(grace_s=1.0)
                len(registry)
        except BaseException as exc:  # a dict changed size during iteration, say
            errors.append(exc)

    # Switch threads as often as possible, so an unguarded iteration would meet a change.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20):
            tasks = hold(registry, 500)
            for task in tasks:
                registry.discard(task.id)
    finally:
        done.set()
        reader.join()
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(registry) == 0


def test_registry_abort_of_another_attempt_keeps_the_held_one(registry: LeaseRegistry) -> None:
    (task,) = hold(registry, 1, attempt=2)
    registry.abort(task.id, attempt=1)  # an older attempt's lease: not this one
    assert registry.snapshot() == [(task.id, 2)]
    registry.abort(task.id, attempt=2)
    assert len(registry) == 0


# --- Heartbeat with an abort handed to the loop later ----------------------------------------


class DeferredAborts:
    """Aborts as the lease keeper makes them: recorded now, done on the loop later."""

    def __init__(self, registry: LeaseRegistry) -> None:
        self.registry = registry
        self.asked: list[tuple[uuid.UUID, int]] = []

    def __call__(self, task_id: uuid.UUID, attempt: int) -> None:
        self.asked.append((task_id, attempt))

    def run(self) -> None:
        for task_id, attempt in self.asked:
            self.registry.abort(task_id, attempt)


async def test_beat_hands_lost_leases_to_its_abort_once(
    store: FakeEngineStore, registry: LeaseRegistry, clock: FakeClock
) -> None:
    aborts = DeferredAborts(registry)
    heartbeat = Heartbeat(
        store, registry, OWNER, clock, lambda: LEASE_S, lambda: INTERVAL_S, abort=aborts
    )
    kept, lost = hold(registry, 2)
    store.keep = lambda task_id, _attempt: task_id == kept.id

    assert await heartbeat.beat() == {lost.id}
    assert aborts.asked == [(lost.id, lost.attempt)]
    assert lost.id in registry  # not aborted yet: the loop has not run the abort

    # The next round does not renew it again, nor report it twice.
    assert await heartbeat.beat() == set()
    assert store.renew_calls[-1].held == ((kept.id, kept.attempt),)
    assert aborts.asked == [(lost.id, lost.attempt)]

    aborts.run()
    assert registry.snapshot() == [(kept.id, kept.attempt)]


async def test_beat_does_not_renew_an_overdue_attempt_whose_abort_is_pending(
    store: FakeEngineStore, registry: LeaseRegistry, clock: FakeClock
) -> None:
    aborts = DeferredAborts(registry)
    heartbeat = Heartbeat(
        store, registry, OWNER, clock, lambda: LEASE_S, lambda: INTERVAL_S, abort=aborts
    )
    (stuck,) = hold(registry, 1, timeout_s=5.0)
    await clock.advance(5.0 + LEASE_S + 1.0)
    (fresh,) = hold(registry, 1, timeout_s=5.0)

    await heartbeat.beat()
    await heartbeat.beat()

    assert aborts.asked == [(stuck.id, stuck.attempt)]
    assert [call.held for call in store.renew_calls] == [((fresh.id, fresh.attempt),)] * 2
    aborts.run()
    assert registry.snapshot() == [(fresh.id, fresh.attempt)]
