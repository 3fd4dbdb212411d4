"""The supervisor restarts a crashed component with growing backoff and stops it on request."""

from __future__ import annotations

import asyncio

import pytest

from scheduler_daemon.engine.supervisor import Supervisor
from tests.fakes import FakeClock


async def test_crashed_component_restarts_with_backoff() -> None:
    clock = FakeClock()
    runs = 0
    crashed = asyncio.Event()

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        crashed.set()
        raise RuntimeError(f"boom {runs}")

    async with Supervisor(clock) as sup:
        sup.start("flaky", flaky)
        await crashed.wait()
        await clock.wait_for_sleepers(1)
        assert runs == 1
        [state] = sup.states()
        assert state.last_error == "RuntimeError: boom 1"
        assert sup.unhealthy() == ["component flaky is restarting: RuntimeError: boom 1"]
        assert clock.deadlines == [0.1]

        await clock.advance(0.1)
        await clock.wait_for_sleepers(1)
        assert runs == 2
        assert clock.deadlines == [0.2]  # the backoff doubled

        await clock.advance(0.1)
        assert clock.deadlines == [pytest.approx(0.1)]  # still backing off
        assert runs == 2
        await clock.advance(0.1)
        await clock.wait_for_sleepers(1)
        assert runs == 3
        assert state.restarts == 3
        await sup.stop("flaky")
    assert runs == 3


async def test_healthy_component_is_not_reported_and_stops_on_request() -> None:
    clock = FakeClock()
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def steady() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async with Supervisor(clock) as sup:
        sup.start("steady", steady)
        await started.wait()
        assert sup.unhealthy() == []
        await sup.stop("steady")
        assert cancelled.is_set()
        [state] = sup.states()
        assert not state.running
        assert state.restarts == 0
