"""The fake clock the engine tests rely on: sleepers wake only when the test advances time."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

import pytest

from scheduler_daemon.clock import Clock, wait_event
from tests.fakes import FakeClock, FakeEngineStore, claimed_task


def test_fake_clock_is_a_clock() -> None:
    clock: Clock = FakeClock(start=5.0)
    assert clock.monotonic() == 5.0
    assert clock.now() == datetime(2025, 1, 1, tzinfo=UTC)


async def test_sleep_wakes_only_at_its_deadline() -> None:
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(3.0))
    await clock.wait_for_sleepers(1)
    assert clock.sleepers == 1
    await clock.advance(2.9)
    assert not sleeper.done()
    await clock.advance(0.1)
    assert sleeper.done()
    assert clock.sleepers == 0
    assert clock.now() == datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=3)


async def test_advance_wakes_in_deadline_order_stepping_time() -> None:
    clock = FakeClock(start=0.0)
    woke: list[tuple[str, float]] = []

    async def ticker() -> None:
        for _ in range(3):
            await clock.sleep(1.0)
            woke.append(("tick", clock.monotonic()))

    async def late() -> None:
        await clock.sleep(2.5)
        woke.append(("late", clock.monotonic()))

    tasks = [asyncio.create_task(ticker()), asyncio.create_task(late())]
    await clock.wait_for_sleepers(2)
    await clock.advance(10.0)
    assert woke == [("tick", 1.0), ("tick", 2.0), ("late", 2.5), ("tick", 3.0)]
    assert clock.monotonic() == 10.0
    assert all(t.done() for t in tasks)


async def test_cancelled_sleeper_is_forgotten() -> None:
    clock = FakeClock()
    sleeper = asyncio.create_task(clock.sleep(1.0))
    await clock.wait_for_sleepers(1)
    sleeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sleeper
    assert clock.sleepers == 0
    assert sleeper.cancelled()


async def test_zero_sleep_returns_without_time_passing() -> None:
    clock = FakeClock()
    await clock.sleep(0)
    await clock.sleep(-1)
    assert clock.sleepers == 0
    assert clock.sleep_calls == [0, -1]


async def test_advance_rejects_negative_time() -> None:
    with pytest.raises(ValueError, match="backwards"):
        await FakeClock().advance(-1.0)


async def test_wait_event_returns_on_event_or_timeout() -> None:
    clock = FakeClock()
    event = asyncio.Event()
    timed = asyncio.create_task(wait_event(event, clock, 2.0))
    await clock.wait_for_sleepers(1)
    await clock.advance(2.0)
    assert timed.done()
    assert timed.result() is False

    signalled = asyncio.create_task(wait_event(event, clock, 2.0))
    await clock.wait_for_sleepers(1)
    event.set()
    assert await signalled is True
    await clock.wait_for_no_sleepers()  # the helper sleeper was cancelled


async def test_fake_store_hands_out_due_tasks_in_order() -> None:
    tasks = [claimed_task() for _ in range(3)]
    store = FakeEngineStore(due=list(tasks), next_due=1.5)
    assert await store.claim("me", 2, 10.0) == tasks[:2]
    assert await store.claim("me", 2, 10.0) == tasks[2:]
    assert await store.claim("me", 2, 10.0) == []
    assert [c.limit for c in store.claim_calls] == [2, 2, 2]
    assert await store.next_due_in() == 1.5
    await store.wait_for_claims(3)
