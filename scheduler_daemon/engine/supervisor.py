"""Starts the daemon's components, restarts one that dies (with backoff), stops them in order."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from scheduler_daemon.clock import Clock
from scheduler_daemon.logs import get_logger

ComponentFactory = Callable[[], Awaitable[None]]

_MIN_BACKOFF_S = 0.1
_STABLE_S = 60.0


@dataclass(slots=True)
class ComponentState:
    name: str
    running: bool = False
    restarts: int = 0
    last_error: str | None = None
    task: asyncio.Task[None] | None = field(default=None, repr=False)


class Supervisor:
    def __init__(self, clock: Clock, max_backoff_s: float = 30.0) -> None:
        self._clock = clock
        self._max_backoff_s = max_backoff_s
        self._components: dict[str, ComponentState] = {}
        self._group = asyncio.TaskGroup()
        self._entered = False
        self._log = get_logger("supervisor")

    async def __aenter__(self) -> Supervisor:
        await self._group.__aenter__()
        self._entered = True
        return self

    async def __aexit__(self, *exc: object) -> None:
        for state in reversed(list(self._components.values())):
            if state.task is not None:
                state.task.cancel()
        await self._group.__aexit__(None, None, None)

    def start(self, name: str, factory: ComponentFactory) -> None:
        assert self._entered, "use the supervisor as an async context manager"
        state = ComponentState(name)
        self._components[name] = state
        state.task = self._group.create_task(self._guard(state, factory), name=name)

    async def stop(self, name: str) -> None:
        state = self._components.get(name)
        if state is None or state.task is None:
            return
        state.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await state.task
        state.running = False

    def states(self) -> list[ComponentState]:
        return list(self._components.values())

    def unhealthy(self) -> list[str]:
        return [
            f"component {s.name} is restarting: {s.last_error}"
            for s in self._components.values()
            if s.task is not None and not s.running and not s.task.done()
        ]

    async def _guard(self, state: ComponentState, factory: ComponentFactory) -> None:
        backoff = _MIN_BACKOFF_S
        log = self._log.bind(component_name=state.name)
        while True:
            state.running = True
            started = self._clock.monotonic()
            try:
                await factory()
                log.warning("component_exited")
                state.last_error = "exited"
            except asyncio.CancelledError:
                state.running = False
                raise
            except Exception as exc:
                state.last_error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "component_crashed",
                    error=state.last_error,
                    restarts=state.restarts,
                    exc_info=True,
                )
            state.running = False
            state.restarts += 1
            if self._clock.monotonic() - started > _STABLE_S:
                backoff = _MIN_BACKOFF_S  # it had been healthy for a while: start over
            await self._clock.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff_s)
