"""The drain walks its steps in order, and a step that fails or runs out of time does not stop
the ones after it."""

from __future__ import annotations

import asyncio

from scheduler_daemon.engine.lifecycle import Loop, Step, drain, start, stop_loop
from scheduler_daemon.engine.supervisor import Supervisor
from tests.fakes import FakeClock


def _step(name: str, done: list[str]) -> Step:
    async def run() -> None:
        done.append(name)

    return Step(name, run)


async def test_steps_run_in_their_order() -> None:
    done: list[str] = []
    steps = [_step(n, done) for n in ("stop claiming", "wait idle", "flush", "release")]
    assert await drain(steps) == ["stop claiming", "wait idle", "flush", "release"]
    assert done == ["stop claiming", "wait idle", "flush", "release"]


async def test_a_step_out_of_time_is_left_and_the_next_ones_run() -> None:
    done: list[str] = []
    never = asyncio.Event()
    left: list[str] = []

    def expired() -> None:
        left.append("asked")

    steps = [
        Step("wait idle", never.wait, timeout_s=lambda: 0.0, expired=expired),
        _step("release", done),
    ]
    assert await drain(steps) == ["release"]
    assert done == ["release"]
    assert left == ["asked"]


async def test_a_failing_step_does_not_stop_the_drain() -> None:
    done: list[str] = []

    async def broken() -> None:
        raise RuntimeError("database gone")

    assert await drain([Step("flush", broken), _step("release", done)]) == ["release"]
    assert done == ["release"]


async def test_loops_start_in_order_and_a_stop_step_stops_one() -> None:
    started: list[str] = []
    stopped: list[str] = []
    both = asyncio.Event()

    def loop(name: str) -> Loop:
        async def run() -> None:
            started.append(name)
            if len(started) == 2:
                both.set()
            try:
                await asyncio.Event().wait()
            finally:
                stopped.append(name)

        return Loop(name, run)

    async with Supervisor(FakeClock()) as supervisor:
        start(supervisor, [loop("completer"), loop("discovery")])
        await both.wait()
        assert started == ["completer", "discovery"]
        assert await drain([stop_loop(supervisor, "discovery")]) == ["stop discovery"]
        assert stopped == ["discovery"]
