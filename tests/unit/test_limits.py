"""Queue limits in one daemon: the limiter's plan (concurrency room, token buckets, reloads)
and discovery claiming by that plan. Fake clock and store, no I/O."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from scheduler_daemon.domain.models import ClaimedTask
from scheduler_daemon.engine.discovery import Discovery
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.limits import NO_LIMITS, QueueLimiter, QueueRoom
from scheduler_daemon.engine.signals import DiscoverySignals
from scheduler_daemon.settings import QueueLimits
from tests.fakes import FakeClock, FakeEngineStore, claimed_task


def limiter(limits: dict[str, QueueLimits]) -> tuple[QueueLimiter, FakeClock, InFlight]:
    clock = FakeClock()
    inflight = InFlight(100, clock)
    return QueueLimiter(lambda: limits, inflight, clock), clock, inflight


# --- the plan ------------------------------------------------------------------------------


def test_no_limits_no_plan() -> None:
    lim, _, _ = limiter({})
    assert lim.plan() is NO_LIMITS
    lim, _, _ = limiter({"mail": QueueLimits()})  # a section without limits limits nothing
    assert lim.plan().limited == {}
    assert lim.plan().blocked == ()


def test_concurrency_room_is_limit_minus_tasks_in_the_pool() -> None:
    lim, _, inflight = limiter({"mail": QueueLimits(concurrency=3, global_concurrency=10)})
    assert lim.plan().limited == {"mail": QueueRoom(3, 10)}
    first, *_ = mail = [claimed_task(queue="mail") for _ in range(3)]
    inflight.admit(mail[:2])
    assert lim.plan().limited == {"mail": QueueRoom(1, 10)}
    inflight.admit(mail[2:])
    plan = lim.plan()
    assert (plan.limited, plan.blocked) == ({}, ("mail",))
    assert plan.excluded == ["mail"]
    inflight.finish(first)
    assert lim.plan().limited == {"mail": QueueRoom(1, 10)}


def test_global_limit_alone_leaves_the_room_to_the_database() -> None:
    lim, _, _ = limiter({"api": QueueLimits(global_concurrency=4)})
    plan = lim.plan()
    assert plan.limited == {"api": QueueRoom(None, 4)}
    assert plan.excluded == ["api"]


def test_token_bucket_starts_full_spends_and_refills() -> None:
    lim, clock, _ = limiter({"sms": QueueLimits(rate_per_s=2.0, burst=5)})
    assert lim.plan().limited["sms"].room == 5
    lim.took("sms", 5)
    plan = lim.plan()
    assert plan.blocked == ("sms",)
    assert plan.wake_in_s == pytest.approx(0.5)  # one token at 2 per second
    clock.jump(0.5)
    assert lim.plan().limited["sms"].room == 1
    clock.jump(100.0)
    assert lim.plan().limited["sms"].room == 5  # never more than the burst


def test_bucket_defaults_to_one_seconds_worth_and_at_least_one() -> None:
    assert QueueLimits(rate_per_s=20.0).bucket_size == 20.0
    assert QueueLimits(rate_per_s=0.1).bucket_size == 1.0
    lim, clock, _ = limiter({"slow": QueueLimits(rate_per_s=0.1)})
    assert lim.plan().limited["slow"].room == 1
    lim.took("slow", 1)
    assert lim.plan().wake_in_s == pytest.approx(10.0)
    clock.jump(10.0)
    assert lim.plan().limited["slow"].room == 1


def test_room_is_the_smaller_of_concurrency_and_tokens() -> None:
    lim, _, inflight = limiter({"q": QueueLimits(concurrency=2, rate_per_s=10.0)})
    assert lim.plan().limited["q"].room == 2
    lim.took("q", 9)
    assert lim.plan().limited["q"].room == 1
    inflight.admit([claimed_task(queue="q"), claimed_task(queue="q")])
    assert lim.plan().blocked == ("q",)


def test_reload_changes_limits_at_the_next_plan() -> None:
    limits = {"q": QueueLimits(rate_per_s=1.0, burst=3)}
    clock = FakeClock()
    lim = QueueLimiter(lambda: limits, InFlight(10, clock), clock)
    lim.took("q", 0)
    assert lim.plan().limited["q"].room == 3
    lim.took("q", 3)
    limits = {"q": QueueLimits(concurrency=4)}  # the rate limit is gone
    assert lim.plan().limited["q"].room == 4
    limits = {"q": QueueLimits(rate_per_s=1.0, burst=2)}  # back: a fresh, full bucket
    assert lim.plan().limited["q"].room == 2


def test_burst_without_rate_is_refused() -> None:
    with pytest.raises(ValueError, match="burst is set but rate_per_s is not"):
        QueueLimits(burst=3)


# --- discovery by the plan -----------------------------------------------------------------


class Rig:
    def __init__(self, limits: dict[str, QueueLimits], capacity: int = 10) -> None:
        self.limits = limits
        self.clock = FakeClock()
        self.store = FakeEngineStore(next_due=None)
        self.inflight = InFlight(capacity, self.clock)
        self.ready: asyncio.Queue[ClaimedTask] = asyncio.Queue()
        self.started: list[ClaimedTask] = []  # taken from ready, attempt not ended
        self.limiter = QueueLimiter(lambda: self.limits, self.inflight, self.clock)
        self.discovery = Discovery(
            self.store,
            self.inflight,
            self.ready,
            "me",
            self.clock,
            batch_size=lambda: 100,
            poll_interval_s=lambda: 5.0,
            lease_s=lambda: 30.0,
            limiter=self.limiter,
            signals=DiscoverySignals().arm(),
        )

    def add(self, queue: str, n: int) -> None:
        self.store.add_due(claimed_task(queue=queue) for _ in range(n))

    def taken(self) -> list[str]:
        out = []
        while not self.ready.empty():
            task = self.ready.get_nowait()
            self.started.append(task)
            out.append(task.queue)
        return out

    def finish(self, queue: str) -> None:
        """One started task of ``queue`` ends its attempt."""
        task = next(t for t in self.started if t.queue == queue)
        self.started.remove(task)
        self.inflight.finish(task)


@contextlib.asynccontextmanager
async def running(rig: Rig) -> AsyncIterator[None]:
    task = asyncio.create_task(rig.discovery.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_limited_queue_gets_its_room_and_the_rest_the_other_slots() -> None:
    rig = Rig({"mail": QueueLimits(concurrency=2)})
    rig.add("mail", 5)
    rig.add("default", 3)
    shortfall = await rig.discovery.claim_once()
    assert sorted(rig.taken()) == ["default"] * 3 + ["mail"] * 2
    assert shortfall == 5
    first, second = rig.store.claim_calls
    assert (first.queue, first.limit, first.global_limit) == ("mail", 2, None)
    assert (second.queue, second.limit, second.exclude) == (None, 8, ("mail",))
    assert rig.inflight.running_in("mail") == 2


async def test_queue_at_its_limit_is_left_out_until_a_task_of_it_finishes() -> None:
    rig = Rig({"mail": QueueLimits(concurrency=1)})
    rig.add("mail", 3)
    async with running(rig):
        signals = rig.discovery.signals
        assert await signals.claimed.next() == 1
        assert await signals.slept.next() == 5.0
        assert rig.taken() == ["mail"]
        # Not waited for: mail is blocked, so the sleep leaves it out.
        assert rig.store.next_due_excluded[-1] == ("mail",)
        rig.finish("mail")  # its task left the pool: discovery looks at once
        assert await signals.claimed.next() == 1
        assert rig.taken() == ["mail"]
        assert len(rig.store.due) == 1


async def test_rate_limited_queue_wakes_discovery_at_its_next_token() -> None:
    rig = Rig({"sms": QueueLimits(rate_per_s=4.0, burst=2)})
    rig.add("sms", 5)
    async with running(rig):
        await rig.clock.wait_for_sleepers(1)
        assert rig.taken() == ["sms", "sms"]
        assert rig.clock.deadlines == [pytest.approx(0.25)]
        await rig.clock.advance(0.25)
        assert rig.taken() == ["sms"]
        await rig.clock.advance(0.25)
        assert rig.taken() == ["sms"]


async def test_paused_queues_are_read_from_the_store_and_left_out() -> None:
    rig = Rig({})
    rig.add("held", 2)
    rig.add("default", 1)
    rig.store.paused = {"held"}
    await rig.discovery.claim_once()
    assert rig.taken() == ["default"]
    excluded = [call.exclude for call in rig.store.claim_calls]
    assert excluded == [("held",)]
    # A resume is announced (notify with no delay): the pause list is read again at once.
    rig.store.paused = set()
    rig.discovery.notify(None)
    await rig.discovery.claim_once()
    assert rig.taken() == ["held", "held"]
    excluded = [call.exclude for call in rig.store.claim_calls]
    assert excluded == [("held",), ()]
