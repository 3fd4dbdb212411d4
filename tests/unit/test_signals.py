"""Test signals: free until armed, every value kept in order once armed, a guard instead of a
hang; and a loop (the rescuer) reporting each round through them."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from scheduler_daemon.engine.leases import Rescuer
from scheduler_daemon.engine.signals import RescuerSignals, Signal
from tests.fakes import FakeClock, FakeEngineStore


def test_an_unarmed_signal_keeps_nothing() -> None:
    signal: Signal[int] = Signal("test.unarmed")
    signal.emit(1)  # costs a check, keeps nothing
    assert not signal.armed
    with pytest.raises(RuntimeError, match="not armed"):
        signal.taken()


async def test_an_armed_signal_hands_out_every_value_in_order() -> None:
    signal: Signal[int] = Signal("test.armed")
    signal.arm()
    signal.emit(1)
    signal.emit(2)  # emitted before anyone waits: kept
    assert await signal.next() == 1
    waiting = asyncio.ensure_future(signal.next())
    assert await signal.next() == 2
    signal.emit(3)
    assert await waiting == 3
    for n in (4, 5, 6):
        signal.emit(n)
    assert await signal.until(lambda n: n % 2 == 1) == 5
    assert signal.taken() == [6]
    assert signal.taken() == []


async def test_a_signal_that_never_comes_fails_instead_of_hanging() -> None:
    signal: Signal[int] = Signal("test.never")
    signal.arm()
    with pytest.raises(TimeoutError, match=r"no test\.never signal"):
        await signal.next(timeout_s=0.01)


async def test_the_rescuer_signals_each_sweep() -> None:
    clock = FakeClock()
    rescuer = Rescuer(
        FakeEngineStore(), clock, interval_s=lambda: 1.0, signals=RescuerSignals().arm()
    )
    runner = asyncio.create_task(rescuer.run())
    try:
        assert await rescuer.signals.swept.next() == 0
        await clock.advance(1.0)
        assert await rescuer.signals.swept.next() == 0
    finally:
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
