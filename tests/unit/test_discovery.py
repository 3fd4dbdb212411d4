"""Discovery: claims only what the executor can take, sleeps exactly until the next due task,
and is woken early by notifications. Driven by a fake clock and an in-memory store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from scheduler_daemon.domain.models import ClaimedTask
from scheduler_daemon.engine.discovery import Discovery
from scheduler_daemon.engine.leases import LeaseRegistry
from scheduler_daemon.engine.slots import Slots
from tests.fakes import FakeClock, FakeEngineStore, claimed_task, settle

OWNER = "host/1/abc"
LEASE_S = 30.0


@dataclass
class Rig:
    clock: FakeClock
    store: FakeEngineStore
    slots: Slots
    registry: LeaseRegistry
    ready: asyncio.Queue[ClaimedTask] = field(default_factory=asyncio.Queue)
    batch_size: int = 100
    poll_s: float = 5.0
    discovery: Discovery = field(init=False)

    def __post_init__(self) -> None:
        self.discovery = Discovery(
            self.store,
            self.slots,
            self.ready,
            self.registry,
            OWNER,
            self.clock,
            batch_size=lambda: self.batch_size,
            poll_interval_s=lambda: self.poll_s,
            lease_s=lambda: LEASE_S,
        )

    @property
    def claims(self) -> int:
        return len(self.store.claim_calls)

    @property
    def limits(self) -> list[int]:
        return [c.limit for c in self.store.claim_calls]

    def drain_ready(self) -> list[ClaimedTask]:
        out = []
        while not self.ready.empty():
            out.append(self.ready.get_nowait())
        return out


def make_rig(
    *,
    capacity: int = 10,
    batch_size: int = 100,
    poll_s: float = 5.0,
    due: int = 0,
    next_due: float | None = None,
) -> Rig:
    clock = FakeClock()
    store = FakeEngineStore(due=[claimed_task() for _ in range(due)], next_due=next_due)
    return Rig(
        clock, store, Slots(capacity), LeaseRegistry(clock), batch_size=batch_size, poll_s=poll_s
    )


@contextlib.asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(rig.discovery.run())
    try:
        yield task
    finally:
        task.cancel()
        # Re-raises anything discovery died of, so a crash fails the test.
        with contextlib.suppress(asyncio.CancelledError):
            await task


# --- (a) backpressure: at most min(free slots, batch size) per claim -----------------------


async def test_claim_once_asks_for_min_of_free_slots_and_batch() -> None:
    rig = make_rig(capacity=4, batch_size=3, due=1)
    shortfall = await rig.discovery.claim_once()
    assert rig.limits == [3]
    assert shortfall == 2
    assert rig.store.claim_calls[0].owner == OWNER
    assert rig.store.claim_calls[0].lease_s == LEASE_S
    assert rig.slots.in_use == 1


async def test_claims_up_to_free_slots_then_waits_for_one() -> None:
    rig = make_rig(capacity=4, batch_size=3, due=10, next_due=0.0)
    expected = rig.store.due[:4]
    async with running(rig):
        await rig.store.wait_for_claims(2)
        await settle()
        # 3 (batch) then 1 (the last free slot); then nothing until a slot comes back.
        assert rig.limits == [3, 1]
        assert rig.slots.in_use == 4
        assert rig.slots.free == 0
        assert rig.drain_ready() == expected
        assert rig.registry.snapshot() == [(t.id, t.attempt) for t in expected]
        assert len(rig.store.due) == 6
        assert rig.discovery.claimed_total == 4
        assert rig.store.next_due_calls == 0  # never came up short, so never asked

        rig.slots.give(2)
        await rig.store.wait_for_claims(3)
        await settle()
        assert rig.limits == [3, 1, 2]
        assert rig.ready.qsize() == 2
        assert len(rig.registry) == 6


async def test_batch_size_limits_each_claim_and_short_claim_sleeps() -> None:
    rig = make_rig(capacity=10, batch_size=3, due=5, poll_s=5.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        assert rig.limits == [3, 3]  # 3, then 2 of 3 came: a shortfall, so it sleeps
        assert rig.ready.qsize() == 5
        assert rig.slots.in_use == 5
        assert rig.store.next_due_calls == 1
        assert rig.clock.deadlines == [5.0]
        # The next claim asks for the batch size again, not more.
        await rig.clock.advance(5.0)
        assert rig.limits == [3, 3, 3]


async def test_batch_size_is_read_live() -> None:
    rig = make_rig(capacity=10, batch_size=3, poll_s=1.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        rig.batch_size = 7
        await rig.clock.advance(1.0)
        assert rig.limits == [3, 7]


# --- (b) no free slots: no claim until one is given back ---------------------------------


async def test_no_claim_without_free_slots() -> None:
    rig = make_rig(capacity=2, due=5)
    rig.slots.take(2)
    async with running(rig):
        await settle()
        assert rig.claims == 0
        assert rig.clock.sleepers == 0  # waiting on the slots, not on the clock
        assert not rig.discovery.sleeping.is_set()
        await rig.clock.advance(60.0)  # time alone does not help
        assert rig.claims == 0

        rig.slots.give(1)
        await rig.store.wait_for_claims(1)
        await settle()
        assert rig.limits == [1]
        assert rig.ready.qsize() == 1
        assert rig.slots.free == 0


async def test_growing_the_pool_lets_discovery_claim() -> None:
    rig = make_rig(capacity=1, due=5)
    rig.slots.take(1)
    async with running(rig):
        await settle()
        assert rig.claims == 0
        rig.slots.resize(4)
        await rig.store.wait_for_claims(1)
        await settle()
        assert rig.limits == [3]


# --- (c) sleeping until the next due task --------------------------------------------------


async def test_sleeps_until_next_due_task() -> None:
    rig = make_rig(next_due=3.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        assert rig.claims == 1
        assert rig.clock.deadlines == [3.0]
        assert rig.discovery.sleeping.is_set()

        await rig.clock.advance(2.9)
        assert rig.claims == 1
        await rig.clock.advance(0.1)
        assert rig.claims == 2


async def test_claims_the_task_that_became_due() -> None:
    rig = make_rig(next_due=3.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        task = claimed_task()
        rig.store.add_due([task])
        await rig.clock.advance(3.0)
        assert rig.drain_ready() == [task]
        assert rig.registry.snapshot() == [(task.id, task.attempt)]


async def test_next_due_beyond_poll_interval_sleeps_poll_interval() -> None:
    rig = make_rig(next_due=60.0, poll_s=5.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        assert rig.clock.deadlines == [5.0]
        await rig.clock.advance(5.0)
        assert rig.claims == 2


async def test_contended_claims_back_off_from_2ms() -> None:
    # Tasks are due (next_due <= 0) but the claim came back empty: other daemons hold them.
    rig = make_rig(next_due=-0.5, poll_s=5.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        assert rig.clock.deadlines == [pytest.approx(0.002)]
        await rig.clock.advance(0.002)
        assert rig.claims == 2
        assert rig.clock.deadlines == [pytest.approx(0.004)]
        await rig.clock.advance(0.004)
        assert rig.claims == 3
        assert rig.clock.deadlines == [pytest.approx(0.008)]
        # Once the contention is over, the back-off starts again from the bottom.
        rig.store.next_due = 3.0
        await rig.clock.advance(0.008)
        assert rig.clock.deadlines == [3.0]
        rig.store.next_due = 0.0
        await rig.clock.advance(3.0)
        assert rig.clock.deadlines == [pytest.approx(0.002)]


async def test_contended_back_off_is_capped_at_poll_interval() -> None:
    rig = make_rig(next_due=0.0, poll_s=0.01)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        await rig.clock.advance(0.002 + 0.004 + 0.008)
        assert rig.claims == 4
        assert rig.clock.deadlines == [pytest.approx(0.01)]


# --- (d) notifications ---------------------------------------------------------------------


@pytest.mark.parametrize("delay", [0.0, None, -1.0])
async def test_notify_now_wakes_at_once(delay: float | None) -> None:
    rig = make_rig(next_due=3.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        started = rig.clock.monotonic()
        rig.discovery.notify(delay)
        await rig.store.wait_for_claims(2)
        assert rig.clock.monotonic() == started  # no fake time passed
        await rig.clock.wait_for_sleepers(1)
        assert rig.claims == 2
        assert rig.clock.deadlines == [3.0]  # and back to sleep until the next due task


async def test_notify_sooner_shortens_the_sleep() -> None:
    rig = make_rig(next_due=3.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        rig.discovery.notify(1.0)
        await settle()
        assert rig.claims == 1
        assert rig.clock.deadlines == [1.0]
        await rig.clock.advance(0.9)
        assert rig.claims == 1
        await rig.clock.advance(0.1)
        assert rig.claims == 2


async def test_notify_later_does_not_shorten_the_sleep() -> None:
    rig = make_rig(next_due=3.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        rig.discovery.notify(5.0)
        await settle()
        assert rig.clock.deadlines == [3.0]
        await rig.clock.advance(2.9)
        assert rig.claims == 1
        await rig.clock.advance(0.1)
        assert rig.claims == 2


async def test_notify_during_a_claim_is_not_lost() -> None:
    rig = make_rig(next_due=3.0)

    def notify_once() -> None:
        rig.store.during_claim = None
        rig.discovery.notify(0.0)

    rig.store.during_claim = notify_once
    async with running(rig):
        await rig.store.wait_for_claims(2)
        await rig.clock.wait_for_sleepers(1)
        assert rig.claims == 2
        assert rig.clock.deadlines == [3.0]


async def test_several_notifications_keep_the_soonest() -> None:
    rig = make_rig(next_due=10.0, poll_s=30.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        rig.discovery.notify(4.0)
        rig.discovery.notify(2.0)
        rig.discovery.notify(6.0)
        await settle()
        assert rig.clock.deadlines == [2.0]
        await rig.clock.advance(2.0)
        assert rig.claims == 2


# --- (e) nothing scheduled: poll ---------------------------------------------------------


async def test_nothing_scheduled_polls_at_poll_interval() -> None:
    rig = make_rig(next_due=None, poll_s=5.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        assert rig.claims == 1
        await rig.clock.advance(4.9)
        assert rig.claims == 1
        await rig.clock.advance(0.1)
        assert rig.claims == 2
        await rig.clock.advance(5.0)
        assert rig.claims == 3


async def test_poll_interval_is_read_live() -> None:
    rig = make_rig(next_due=None, poll_s=5.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        rig.poll_s = 2.0
        await rig.clock.advance(5.0)
        assert rig.claims == 2
        assert rig.clock.deadlines == [2.0]
