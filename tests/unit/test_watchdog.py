"""The stall watchdog on a fake clock: quiet components, waiting components, loop lag."""

from __future__ import annotations

import asyncio

from scheduler_daemon.engine.watchdog import Watchdog
from scheduler_daemon.settings import WatchdogSettings
from tests.fakes import FakeClock


def test_a_quiet_component_is_stalled_after_its_allowance() -> None:
    clock = FakeClock()
    dog = Watchdog(clock, lambda: WatchdogSettings(stall_after_s=10, max_loop_lag_s=1))
    report = dog.reporter("discovery", quiet_s=lambda: 5.0)
    clock.jump(14)
    dog.check()
    assert dog.problems() == []
    clock.jump(2)
    dog.check()
    assert dog.problems() == ["component discovery stalled"]
    report()
    dog.check()
    assert dog.problems() == []


def test_a_component_waiting_for_work_is_not_stalled_while_there_is_none() -> None:
    clock = FakeClock()
    dog = Watchdog(clock, lambda: WatchdogSettings(stall_after_s=10))
    pending = [False]
    dog.reporter("completer", busy=lambda: pending[0])
    clock.jump(60)
    dog.check()
    assert dog.problems() == []
    pending[0] = True
    clock.jump(11)
    dog.check()
    assert dog.problems() == ["component completer stalled"]


async def test_loop_lag_above_the_threshold_is_a_problem() -> None:
    clock = FakeClock()
    dog = Watchdog(clock, lambda: WatchdogSettings(interval_s=0.5, max_loop_lag_s=1.0))
    task = asyncio.create_task(dog.run())
    try:
        await clock.wait_for_sleepers(1)
        clock.jump(3.0)  # the loop was blocked 2.5 s past the 0.5 s sleep's deadline
        await clock.advance(0)
        await clock.wait_for_sleepers(1)
        assert dog.lag_s == 2.5
        assert dog.problems() == ["event loop lag 2.50s above watchdog.max_loop_lag_s (1s)"]
        await clock.advance(0.5)
        await clock.wait_for_sleepers(1)
        assert dog.problems() == []
    finally:
        task.cancel()
