"""The daemon's lifecycle as data: the loops it starts, in order, and the steps of its drain.

The composition root (``app.py``) declares both tables; the supervisor starts the loops and
``drain`` walks the steps. Every step runs, in order, whatever the one before it did: a step
that runs out of time or fails is logged and the walk goes on, because the later steps (record
what finished, release the leases still held) keep accepted work from being lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from scheduler_daemon.engine.supervisor import ComponentFactory, Supervisor
from scheduler_daemon.logs import get_logger

log = get_logger("lifecycle")


@dataclass(frozen=True, slots=True)
class Loop:
    """A supervised loop: restarted with backoff when it dies, stopped by name."""

    name: str
    run: ComponentFactory


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the drain. ``timeout_s`` (read when the step starts; None: no limit) bounds
    it; ``expired`` is called when it ran out (to log what was left; without it, the walk
    logs ``drain_step_expired``)."""

    name: str
    run: Callable[[], Awaitable[object]]
    timeout_s: Callable[[], float] | None = None
    expired: Callable[[], None] | None = None


def start(supervisor: Supervisor, loops: Sequence[Loop]) -> None:
    """Start ``loops`` in their order."""
    for loop in loops:
        supervisor.start(loop.name, loop.run)


class Stoppable(Protocol):
    """What stops a loop by name (the supervisor)."""

    async def stop(self, name: str) -> None: ...


def stop_loop(supervisor: Stoppable, name: str) -> Step:
    """The step that stops the loop ``name``."""
    return Step(f"stop {name}", lambda: supervisor.stop(name))


async def drain(steps: Sequence[Step]) -> list[str]:
    """Walk ``steps`` in order; the names of those that completed in time."""
    completed: list[str] = []
    for step in steps:
        limit = None if step.timeout_s is None else step.timeout_s()
        try:
            async with asyncio.timeout(limit):
                await step.run()
        except TimeoutError:
            if step.expired is not None:
                step.expired()
            else:
                log.warning("drain_step_expired", step=step.name, timeout_s=limit)
            continue
        except Exception as exc:  # the next steps still run: they keep work from being lost
            log.error("drain_step_failed", step=step.name, error=repr(exc), exc_info=True)
            continue
        completed.append(step.name)
    return completed
