"""Discovery: claims only what the executor can take, sleeps exactly until the next due task,
and is woken early by notifications. Driven by a fake clock and an in-memory store."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest

from scheduler_daemon.domain.models import ClaimedTask
from scheduler_daemon.engine.discovery import Discovery
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.signals import DiscoverySignals
from tests.fakes import ClaimCall, FakeClock, FakeEngineStore, claimed_task

OWNER = "host/1/abc"
LEASE_S = 30.0


@dataclass
class Rig:
    clock: FakeClock
    store: FakeEngineStore
    inflight: InFlight
    ready: asyncio.Queue[ClaimedTask] = field(default_factory=asyncio.Queue)
    batch_size: int = 100
    poll_s: float = 5.0
    discovery: Discovery = field(init=False)

    def __post_init__(self) -> None:
        self.discovery = Discovery(
            self.store,
            self.inflight,
            self.ready,
            OWNER,
            self.clock,
            batch_size=lambda: self.batch_size,
            poll_interval_s=lambda: self.poll_s,
            lease_s=lambda: LEASE_S,
            signals=DiscoverySignals().arm(),
        )

    @property
    def signals(self) -> DiscoverySignals:
        return self.discovery.signals

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
    return Rig(clock, store, InFlight(capacity, clock), batch_size=batch_size, poll_s=poll_s)


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
    assert rig.inflight.in_use == 1


async def test_claims_up_to_free_slots_then_waits_for_one() -> None:
    rig = make_rig(capacity=4, batch_size=3, due=10, next_due=0.0)
    expected = rig.store.due[:4]
    async with running(rig):
        # 3 (batch) then 1 (the last free slot); then nothing until a slot comes back.
        assert [await rig.signals.claimed.next(), await rig.signals.claimed.next()] == [3, 1]
        await rig.signals.waiting_for_slots.next()
        assert rig.limits == [3, 1]
        assert rig.inflight.in_use == 4
        assert rig.inflight.free == 0
        assert rig.drain_ready() == expected
        assert rig.inflight.snapshot() == [(t.id, t.attempt) for t in expected]
        assert len(rig.store.due) == 6
        assert rig.discovery.claimed_total == 4
        assert rig.store.next_due_calls == 0  # never came up short, so never asked

        for task in expected[:2]:  # two attempts end
            rig.inflight.finish(task)
        assert await rig.signals.claimed.next() == 2
        assert rig.limits == [3, 1, 2]
        assert rig.ready.qsize() == 2
        assert len(rig.inflight) == 6


async def test_batch_size_limits_each_claim_and_short_claim_sleeps() -> None:
    rig = make_rig(capacity=10, batch_size=3, due=5, poll_s=5.0)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        assert rig.limits == [3, 3]  # 3, then 2 of 3 came: a shortfall, so it sleeps
        assert rig.ready.qsize() == 5
        assert rig.inflight.in_use == 5
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
    busy = [claimed_task(), claimed_task()]
    rig.inflight.admit(busy)  # every slot taken
    async with running(rig):
        await rig.signals.waiting_for_slots.next()
        assert rig.claims == 0
        assert rig.clock.sleepers == 0  # waiting on the slots, not on the clock
        await rig.clock.advance(60.0)  # time alone does not help
        assert rig.claims == 0
        assert rig.signals.slept.taken() == []

        rig.inflight.finish(busy[0])
        assert await rig.signals.claimed.next() == 1
        assert rig.limits == [1]
        assert rig.ready.qsize() == 1
        assert rig.inflight.free == 0


async def test_growing_the_pool_lets_discovery_claim() -> None:
    rig = make_rig(capacity=1, due=5)
    rig.inflight.admit([claimed_task()])
    async with running(rig):
        await rig.signals.waiting_for_slots.next()
        assert rig.claims == 0
        rig.inflight.resize(4)
        assert await rig.signals.claimed.next() == 3
        assert rig.limits == [3]


# --- (c) sleeping until the next due task --------------------------------------------------


async def test_sleeps_until_next_due_task() -> None:
    rig = make_rig(next_due=3.0)
    async with running(rig):
        assert await rig.signals.slept.next() == 3.0
        await rig.clock.wait_for_sleepers(1)
        assert rig.claims == 1
        assert rig.clock.deadlines == [3.0]

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
        assert rig.inflight.snapshot() == [(task.id, task.attempt)]


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
        assert await rig.signals.slept.next() == 3.0
        rig.discovery.notify(1.0)
        assert await rig.signals.slept.next() == 1.0  # woken: the sleep is shorter now
        assert rig.claims == 1
        await rig.clock.advance(0.9)
        assert rig.claims == 1
        await rig.clock.advance(0.1)
        assert rig.claims == 2


async def test_notify_later_does_not_shorten_the_sleep() -> None:
    rig = make_rig(next_due=3.0)
    async with running(rig):
        assert await rig.signals.slept.next() == 3.0
        rig.discovery.notify(5.0)  # later than it looks anyway: no need to wake it
        await rig.clock.advance(2.9)
        assert rig.signals.slept.taken() == []  # it slept on
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
        assert await rig.signals.slept.next() == 10.0
        rig.discovery.notify(4.0)
        rig.discovery.notify(2.0)
        rig.discovery.notify(6.0)
        assert await rig.signals.slept.next() == 2.0
        assert rig.signals.slept.taken() == []
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


# --- (f) short claims: contention or tasks that just fell due ------------------------------


@dataclass(eq=False)
class TimedStore(FakeEngineStore):
    """Tasks that fall due at set times of the fake clock. Every claim and ``next_due_in`` takes
    ``latency_s`` of fake time and answers as of the moment it began (a statement's snapshot);
    rows in ``locked`` are held by another claimer: claims skip them, ``next_due_in`` sees
    them."""

    clock: FakeClock = field(default_factory=FakeClock)
    latency_s: float = 0.0
    schedule: list[tuple[float, ClaimedTask]] = field(default_factory=list)  # by due time
    locked: set[uuid.UUID] = field(default_factory=set)
    claim_times: list[float] = field(default_factory=list)  # each claim's snapshot
    waits: dict[uuid.UUID, float] = field(default_factory=dict)  # claimed at minus due at

    def fall_due(self, in_s: float) -> ClaimedTask:
        """A task due ``in_s`` seconds from now (on a whole nanosecond, as the clock keeps)."""
        task = claimed_task()
        at = round((self.clock.monotonic() + in_s) * 1e9) / 1e9
        self.schedule.append((at, task))
        self.schedule.sort(key=lambda entry: entry[0])
        return task

    def longest_wait(self) -> float:
        """The longest any due task waited: claimed ones until their claim, the others until
        now."""
        now = self.clock.monotonic()
        unclaimed = [now - at for at, task in self.schedule if at <= now]
        return max([*self.waits.values(), *unclaimed], default=0.0)

    async def claim(
        self, owner: str, limit: int, lease_s: float, exclude: Sequence[str] = ()
    ) -> list[ClaimedTask]:
        self.claim_calls.append(ClaimCall(owner, limit, lease_s, tuple(exclude)))
        now = self.clock.monotonic()
        self.claim_times.append(now)
        free = [(at, t) for at, t in self.schedule if at <= now and t.id not in self.locked]
        taken = free[:limit]
        ids = {t.id for _, t in taken}
        self.schedule = [(at, t) for at, t in self.schedule if t.id not in ids]
        self.waits.update((t.id, now - at) for at, t in taken)
        await self.clock.sleep(self.latency_s)
        return [t for _, t in taken]

    async def next_due_in(self, exclude: Sequence[str] = ()) -> float | None:
        self.next_due_calls += 1
        now = self.clock.monotonic()
        answer = self.schedule[0][0] - now if self.schedule else None
        await self.clock.sleep(self.latency_s)
        return answer


def make_timed_rig(*, latency_s: float = 0.0, poll_s: float = 5.0) -> tuple[Rig, TimedStore]:
    clock = FakeClock()
    store = TimedStore(clock=clock, latency_s=latency_s)
    rig = Rig(clock, store, InFlight(10_000, clock), poll_s=poll_s)
    return rig, store


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


async def test_tasks_falling_due_every_ms_under_load_never_wait_long() -> None:
    # Every store call takes 1.5 ms: each claim takes the few tasks due, and by the time
    # next_due_in answers another one has fallen due. That is no contention: look again at once.
    rig, store = make_timed_rig(latency_s=0.0015)
    for i in range(1, 1001):
        store.fall_due(i * 0.001)
    async with running(rig):
        await rig.clock.advance(0.8)
        assert store.longest_wait() <= 0.005
        # Never slept between rounds: one claim every 3 ms (claim plus next_due_in).
        assert max(gaps(store.claim_times)) == pytest.approx(0.003)
        assert len(store.waits) >= 790


async def test_task_falling_due_just_after_an_empty_claim_is_claimed_at_once() -> None:
    rig, store = make_timed_rig(latency_s=0.001)
    start = rig.clock.monotonic()
    task = store.fall_due(0.0005)  # after the first claim's snapshot, before next_due_in's
    async with running(rig):
        # Claim (empty), next_due_in (-0.5 ms), then at once the claim that takes it.
        await rig.clock.advance(0.004)
        assert store.claim_times == [start, pytest.approx(start + 0.002, abs=1e-8)]
        assert store.waits == {task.id: pytest.approx(0.0015)}
        assert rig.clock.deadlines == [pytest.approx(5.0)]  # nothing left: poll


async def test_locked_row_backs_off_and_a_claim_that_takes_rows_resets_it() -> None:
    rig, store = make_timed_rig()
    held = store.fall_due(-1.0)
    store.locked.add(held.id)  # due, but another daemon holds its row
    async with running(rig):
        for wait in (0.002, 0.004, 0.008, 0.016):
            await rig.clock.wait_for_sleepers(1)
            assert rig.clock.deadlines == [pytest.approx(wait)]
            await rig.clock.advance(wait)
        assert len(store.claim_times) == 5
        assert store.waits == {}
        fresh = store.fall_due(0.0)  # due now, its row free; the locked one stays locked
        await rig.clock.wait_for_sleepers(1)
        assert rig.clock.deadlines == [pytest.approx(0.032)]
        await rig.clock.advance(0.032)
        assert list(store.waits) == [fresh.id]
        # The claim took a row: the back-off starts again from the bottom.
        await rig.clock.wait_for_sleepers(1)
        assert rig.clock.deadlines == [pytest.approx(0.002)]
        await rig.clock.advance(0.002)
        await rig.clock.wait_for_sleepers(1)
        assert rig.clock.deadlines == [pytest.approx(0.004)]


async def test_contended_back_off_stops_short_of_the_poll_interval() -> None:
    # A row stays locked for long: tasks falling due meanwhile still wait only briefly.
    rig, store = make_timed_rig(poll_s=5.0)
    held = store.fall_due(-1.0)
    store.locked.add(held.id)
    later = store.fall_due(1.0)
    async with running(rig):
        await rig.clock.advance(0.9)
        await rig.clock.wait_for_sleepers(1)
        assert rig.clock.deadlines[0] <= 0.05
        await rig.clock.advance(0.2)
        assert store.waits[later.id] <= 0.05


# --- (g) pause list reads racing a resume --------------------------------------------------


@dataclass(eq=False)
class HeldPausesStore(FakeEngineStore):
    """``paused_queues`` reads the pauses when called, then, while ``hold`` is set, waits for
    ``resume_read`` before answering (``reading`` tells the test the read is in flight)."""

    hold: bool = False
    reading: asyncio.Event = field(default_factory=asyncio.Event)
    resume_read: asyncio.Event = field(default_factory=asyncio.Event)
    pause_reads: int = 0

    async def paused_queues(self) -> frozenset[str]:
        self.pause_reads += 1
        answer = frozenset(self.paused)
        if self.hold:
            self.reading.set()
            await self.resume_read.wait()
        return answer


async def test_resume_during_a_pause_read_is_not_lost() -> None:
    clock = FakeClock()
    store = HeldPausesStore(paused={"held"})
    store.add_due(claimed_task(queue="held") for _ in range(2))
    rig = Rig(clock, store, InFlight(10, clock), poll_s=5.0)
    async with running(rig):
        await clock.wait_for_sleepers(1)
        assert rig.drain_ready() == []
        assert store.pause_reads == 1
        # Something else asks for a fresh look; its read of the pauses is in flight when the
        # queue is resumed and the resume is announced.
        store.hold = True
        rig.discovery.notify(None)
        async with asyncio.timeout(5.0):
            await store.reading.wait()
        store.paused = set()
        rig.discovery.notify(None)
        store.hold = False
        store.resume_read.set()
        assert await rig.signals.claimed.until(lambda n: n > 0) == 2
        # The read that began before the resume is stale: the pauses are read again and the
        # resumed queue is claimed at once, not a poll interval later.
        assert [t.queue for t in rig.drain_ready()] == ["held", "held"]
        assert clock.monotonic() == 1000.0
        assert store.pause_reads == 3


# --- a database outage: discovery waits it out instead of crashing ---------------------------


@dataclass
class DownStore(FakeEngineStore):
    """Refuses connections ``outage`` times, then answers as the fake store does."""

    outage: int = 3

    async def claim(
        self, owner: str, limit: int, lease_s: float, exclude: Sequence[str] = ()
    ) -> list[ClaimedTask]:
        if self.outage > 0:
            self.outage -= 1
            self.claim_calls.append(ClaimCall(owner, limit, lease_s, tuple(exclude)))
            raise ConnectionRefusedError("connection refused")
        return await super().claim(owner, limit, lease_s, exclude)


async def test_an_outage_is_waited_out_with_back_off_then_due_tasks_are_claimed() -> None:
    clock = FakeClock()
    store = DownStore(due=[claimed_task() for _ in range(2)], next_due=None)
    rig = Rig(clock, store, InFlight(10, clock))
    async with running(rig) as task:
        await clock.wait_for_sleepers(1)
        assert clock.deadlines == [pytest.approx(0.05)]
        await clock.advance(0.05)
        await clock.wait_for_sleepers(1)
        assert clock.deadlines == [pytest.approx(0.1)]  # doubling while it lasts
        await clock.advance(0.1)
        await clock.advance(0.2)
        assert await rig.signals.claimed.until(lambda n: n > 0) == 2
        assert not task.done(), "discovery crashed on an unreachable database"
        assert rig.discovery.claimed_total == 2
        assert len(rig.drain_ready()) == 2
