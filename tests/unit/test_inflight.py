"""The in-flight ledger: slots (backpressure, reservations, per-queue counts, resize) and held
leases (snapshot, attach/detach, overdue, abort, reads from another thread)."""

from __future__ import annotations

import asyncio
import sys
import threading
import uuid
from typing import Any

import pytest

from scheduler_daemon.domain.models import ClaimedTask
from scheduler_daemon.engine.inflight import InFlight
from tests.fakes import FakeClock, claimed_task

GUARD_S = 5.0  # a broken test fails instead of hanging; never part of an assertion


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def inflight(clock: FakeClock) -> InFlight:
    return InFlight(100, clock)


def pending_future() -> asyncio.Future[Any]:
    return asyncio.get_running_loop().create_future()


def hold(inflight: InFlight, n: int, **kwargs: Any) -> list[ClaimedTask]:
    tasks = [claimed_task(**kwargs) for _ in range(n)]
    for task in tasks:
        inflight.admit([task])
    return tasks


# --- slots ---------------------------------------------------------------------------------


def test_a_task_takes_a_slot_until_its_attempt_ends_and_its_lease_until_released(
    clock: FakeClock,
) -> None:
    inflight = InFlight(2, clock)
    a, b = claimed_task(), claimed_task()
    inflight.admit([a, b])
    assert (inflight.in_use, inflight.running, inflight.free) == (2, 2, 0)
    assert len(inflight) == 2
    inflight.finish(a)  # its result waits for the completer: the lease is still held
    assert (inflight.in_use, inflight.free) == (1, 1)
    assert a.id in inflight
    inflight.release([a.id])
    assert a.id not in inflight
    assert inflight.snapshot() == [(b.id, b.attempt)]


def test_tasks_are_counted_per_queue_and_each_leaving_is_reported(clock: FakeClock) -> None:
    inflight = InFlight(5, clock)
    freed: list[str] = []
    inflight.on_queue_freed = freed.append
    a1, a2, b1 = (claimed_task(queue=q) for q in ("a", "a", "b"))
    inflight.admit([a1, a2, b1])
    assert [inflight.running_in(q) for q in ("a", "b", "c")] == [2, 1, 0]
    inflight.finish(a1)
    inflight.finish(b1)
    assert [inflight.running_in(q) for q in ("a", "b")] == [1, 0]
    assert inflight.in_use == 1
    assert freed == ["a", "b"]


def test_reserved_slots_are_in_use_until_filled_or_given_back(clock: FakeClock) -> None:
    inflight = InFlight(10, clock)
    inflight.reserve(4)  # an SQS receive of up to 4 messages
    assert (inflight.in_use, inflight.reserved, inflight.running, inflight.free) == (4, 4, 0, 6)
    task = claimed_task(queue="mail")
    inflight.admit([task], reserved=True)  # one message started its task
    assert (inflight.in_use, inflight.reserved, inflight.running) == (4, 3, 1)
    assert inflight.running_in("mail") == 1
    inflight.unreserve(3)  # the rest of the receive brought nothing to run
    assert (inflight.in_use, inflight.reserved, inflight.free) == (1, 0, 9)
    inflight.finish(task)
    assert inflight.in_use == 0


async def test_wait_free_returns_once_a_slot_comes_back(clock: FakeClock) -> None:
    inflight = InFlight(2, clock)
    (task,) = hold(inflight, 1)
    inflight.reserve(1)
    waiting = asyncio.ensure_future(inflight.wait_free())
    await asyncio.sleep(0)
    assert not waiting.done()
    inflight.finish(task)
    async with asyncio.timeout(GUARD_S):
        assert await waiting == 1
    waiting = asyncio.ensure_future(inflight.wait_free())
    inflight.admit([claimed_task()])
    await asyncio.sleep(0)
    assert not waiting.done()
    inflight.unreserve(1)
    async with asyncio.timeout(GUARD_S):
        assert await waiting == 1


async def test_resize_wakes_a_wait_for_a_free_slot(clock: FakeClock) -> None:
    inflight = InFlight(1, clock)
    hold(inflight, 1)
    waiting = asyncio.ensure_future(inflight.wait_free())
    await asyncio.sleep(0)
    assert not waiting.done()
    inflight.resize(4)  # executor.concurrency raised by a reload
    async with asyncio.timeout(GUARD_S):
        assert await waiting == 3
    assert inflight.capacity == 4
    inflight.resize(1)
    assert inflight.free == 0


async def test_wait_idle_waits_for_attempts_and_reservations(clock: FakeClock) -> None:
    inflight = InFlight(4, clock)
    (task,) = hold(inflight, 1)
    inflight.reserve(2)
    idle = asyncio.ensure_future(inflight.wait_idle())
    inflight.finish(task)
    await asyncio.sleep(0)
    assert not idle.done()  # a receive still holds its reservation
    inflight.unreserve(2)
    async with asyncio.timeout(GUARD_S):
        await idle
    assert len(inflight) == 1  # idle is about slots: the result is not recorded yet


def test_an_aborted_attempt_keeps_its_slot_until_it_ends(inflight: InFlight) -> None:
    (task,) = hold(inflight, 1)
    inflight.abort(task.id)
    assert len(inflight) == 0
    assert inflight.in_use == 1  # the attempt is still being cancelled
    inflight.finish(task)
    assert inflight.in_use == 0


# --- the held leases ----------------------------------------------------------------------


def test_admitted_tasks_are_held_in_claim_order(inflight: InFlight) -> None:
    a = claimed_task(attempt=1)
    b = claimed_task(attempt=3, max_attempts=5)
    inflight.admit([a])
    inflight.admit([b])
    assert len(inflight) == 2
    assert inflight.snapshot() == [(a.id, 1), (b.id, 3)]


def test_release_forgets_the_lease(inflight: InFlight) -> None:
    a, b = hold(inflight, 2)
    inflight.release([a.id])
    inflight.release([uuid.uuid4()])  # unknown: no error
    assert inflight.snapshot() == [(b.id, b.attempt)]


async def test_attach_and_detach(inflight: InFlight) -> None:
    (a,) = hold(inflight, 1)
    fut = pending_future()
    held = inflight.attach(a.id, fut)
    assert held is not None
    assert held.task == a
    assert held.running is fut
    assert not held.lost
    inflight.detach(a.id)
    assert held.running is None
    inflight.abort(a.id)
    assert not fut.cancelled()  # detached: abort no longer reaches it
    fut.cancel()


async def test_attach_to_unknown_task_returns_none(inflight: InFlight) -> None:
    fut = pending_future()
    assert inflight.attach(uuid.uuid4(), fut) is None
    assert len(inflight) == 0
    fut.cancel()


async def test_abort_cancels_the_attempt_and_forgets_it(inflight: InFlight) -> None:
    a, b = hold(inflight, 2)
    fut = pending_future()
    held = inflight.attach(a.id, fut)
    assert held is not None
    inflight.abort(a.id)
    assert fut.cancelled()
    assert held.lost
    assert inflight.snapshot() == [(b.id, b.attempt)]
    assert inflight.attach(a.id, pending_future()) is None


def test_abort_without_attempt_or_unknown(inflight: InFlight) -> None:
    (a,) = hold(inflight, 1)
    inflight.abort(a.id)  # claimed but not started yet
    inflight.abort(a.id)  # twice: no error
    inflight.abort(uuid.uuid4())
    assert len(inflight) == 0


async def test_overdue(inflight: InFlight, clock: FakeClock) -> None:
    (short,) = hold(inflight, 1, timeout_s=5.0)
    (long,) = hold(inflight, 1, timeout_s=60.0)
    await clock.advance(5.0 + 30.0)
    assert inflight.overdue(grace_s=30.0) == []  # exactly at the limit: not yet
    await clock.advance(0.5)
    assert inflight.overdue(grace_s=30.0) == [short.id]
    await clock.advance(60.0)
    assert sorted(inflight.overdue(grace_s=30.0)) == sorted([short.id, long.id])


# --- reading the leases from another thread, aborting a given attempt ----------------------


def test_lease_reads_are_safe_from_another_thread(inflight: InFlight) -> None:
    """The lease keeper's thread reads while the loop admits and releases."""
    errors: list[BaseException] = []
    done = threading.Event()

    def read() -> None:
        try:
            while not done.is_set():
                inflight.snapshot()
                inflight.overdue(grace_s=1.0)
                len(inflight)
        except BaseException as exc:  # a dict changed size during iteration, say
            errors.append(exc)

    # Switch threads as often as possible, so an unguarded iteration would meet a change.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    reader = threading.Thread(target=read)
    reader.start()
    try:
        for _ in range(20):
            tasks = hold(inflight, 500)
            for task in tasks:
                inflight.finish(task)
                inflight.release([task.id])
    finally:
        done.set()
        reader.join()
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(inflight) == 0


def test_abort_of_another_attempt_keeps_the_held_one(inflight: InFlight) -> None:
    (task,) = hold(inflight, 1, attempt=2)
    inflight.abort(task.id, attempt=1)  # an older attempt's lease: not this one
    assert inflight.snapshot() == [(task.id, 2)]
    inflight.abort(task.id, attempt=2)
    assert len(inflight) == 0
