"""The stall watchdog: event-loop lag and component progress, reported through /readyz.

Loop-driven components report progress each time round their loop (``Progress.reporter``);
a component that has not reported within its own allowance is stalled. Components that wait
for work (the completer) count as stalled only while work waits for them.

The lag measured on the loop is known only once the loop runs again; ``LoopBlockDetector``
watches from another thread, so a block is logged while it lasts, naming the attempt (the
asyncio task) that holds the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from scheduler_daemon.alerts import AlertSink, component_stalled, ignore
from scheduler_daemon.clock import Clock
from scheduler_daemon.logs import get_logger
from scheduler_daemon.settings import WatchdogSettings


def _noop() -> None:
    return None


NOOP: Callable[[], None] = _noop

ATTEMPT_TASK_PREFIX = "attempt"


def attempt_task_name(task_id: uuid.UUID, attempt: int, action: str) -> str:
    """The name of the asyncio task that runs one attempt: what a loop-block report names."""
    return f"{ATTEMPT_TASK_PREFIX}:{task_id}:{attempt}:{action}"


def describe_task(task: asyncio.Task[Any] | None) -> dict[str, Any]:
    """Log fields for the asyncio task ``task``: its name, and for an attempt's task the
    task id, attempt and action that its name carries."""
    if task is None:
        return {"running": None}  # a plain callback, not a task, holds the loop
    name = task.get_name()
    fields: dict[str, Any] = {"running": name}
    prefix, _, rest = name.partition(":")
    task_id, _, rest = rest.partition(":")
    attempt, _, action = rest.partition(":")
    if prefix == ATTEMPT_TASK_PREFIX and attempt.isdigit() and action:
        fields.update(task_id=task_id, attempt=int(attempt), action=action)
    return fields


@dataclass(slots=True)
class _Watched:
    name: str
    quiet_s: Callable[[], float]  # how long it may be quiet on its own (its poll interval)
    busy: Callable[[], bool] | None  # None: always expected to come round
    last: float
    stalled: bool = False


class Watchdog:
    def __init__(
        self,
        clock: Clock,
        settings: Callable[[], WatchdogSettings],
        alerts: AlertSink | None = None,
    ) -> None:
        self._clock = clock
        self._alert = alerts or ignore
        self._settings = settings
        self._watched: dict[str, _Watched] = {}
        self._log = get_logger("watchdog")
        self.lag_s = 0.0
        self.max_lag_s = 0.0

    def reporter(
        self,
        name: str,
        quiet_s: Callable[[], float] = lambda: 0.0,
        busy: Callable[[], bool] | None = None,
    ) -> Callable[[], None]:
        """Register ``name``; the returned function reports its progress."""
        watched = _Watched(name, quiet_s, busy, self._clock.monotonic())
        self._watched[name] = watched

        def report() -> None:
            watched.last = self._clock.monotonic()

        return report

    def forget(self, name: str) -> None:
        self._watched.pop(name, None)

    def problems(self) -> list[str]:
        s = self._settings()
        out: list[str] = []
        if self.lag_s > s.max_loop_lag_s:
            out.append(
                f"event loop lag {self.lag_s:.2f}s above watchdog.max_loop_lag_s "
                f"({s.max_loop_lag_s:g}s)"
            )
        out.extend(f"component {w.name} stalled" for w in self._watched.values() if w.stalled)
        return out

    def check(self) -> None:
        s = self._settings()
        now = self._clock.monotonic()
        for w in self._watched.values():
            quiet = now - w.last
            expected = w.busy is None or w.busy()
            if not expected:
                w.last = now  # idle with nothing to do is not a stall
                quiet = 0.0
            stalled = quiet > s.stall_after_s + w.quiet_s()
            if stalled and not w.stalled:
                self._log.error("component_stalled", name=w.name, quiet_s=round(quiet, 1))
                self._alert(component_stalled(w.name, quiet))
            elif w.stalled and not stalled:
                self._log.info("component_recovered", name=w.name)
            w.stalled = stalled

    async def run(self) -> None:
        lagging = False
        while True:
            interval = self._settings().interval_s
            before = self._clock.monotonic()
            await self._clock.sleep(interval)
            self.lag_s = max(self._clock.monotonic() - before - interval, 0.0)
            self.max_lag_s = max(self.max_lag_s, self.lag_s)
            over = self.lag_s > self._settings().max_loop_lag_s
            if over and not lagging:
                self._log.error("event_loop_lag", lag_s=round(self.lag_s, 3))
            lagging = over
            self.check()


class LoopBlockDetector:
    """Notices from another thread that the daemon's event loop is blocked, while it is.

    Every ``watchdog.interval_s`` it posts a callback to the watched loop; when the loop has
    not run it within ``watchdog.max_loop_lag_s``, something holds the loop (a handler that
    calls blocking code, most often) and ``event_loop_blocked`` is logged naming the asyncio
    task running on the loop right now (and again for each other task seen holding it while the
    block lasts); ``event_loop_unblocked`` follows when the callback finally ran, with how long
    the loop was held. ``run`` runs on another thread's event loop (the lease keeper's): the
    watched loop cannot report on itself while it is held.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        settings: Callable[[], WatchdogSettings],
        clock: Clock,
    ) -> None:
        self._loop = loop
        self._settings = settings
        self._clock = clock
        self._log = get_logger("watchdog")

    async def run(self) -> None:
        while True:
            s = self._settings()
            await asyncio.sleep(s.interval_s)
            sent = self._clock.monotonic()
            answered = self._probe()
            if answered is None:
                return  # the watched loop is closed: nothing left to watch
            running: dict[str, Any] | None = None  # the task last reported holding the loop
            try:
                while True:
                    await asyncio.wait([answered], timeout=s.max_loop_lag_s)
                    if answered.done():
                        break
                    # Read from this thread: the loop's current task (set while a task's step
                    # runs). Tasks may hold the loop in turn: each one seen is reported.
                    now = describe_task(asyncio.current_task(self._loop))
                    if now != running:
                        running = now
                        self._blocked(sent, s.max_loop_lag_s, running)
            finally:  # also when stopped: a block that ended is reported as ended
                if running is not None and answered.done():
                    blocked_s = round(answered.result() - sent, 3)
                    self._log.warning("event_loop_unblocked", blocked_s=blocked_s, **running)

    def _blocked(self, since: float, max_lag_s: float, running: dict[str, Any]) -> None:
        self._log.error(
            "event_loop_blocked",
            blocked_s=round(self._clock.monotonic() - since, 3),
            max_loop_lag_s=max_lag_s,
            **running,
        )

    def _probe(self) -> asyncio.Future[float] | None:
        """A future (of this thread's loop) resolved with the time the watched loop ran the
        probe; None when the watched loop is closed."""
        own = asyncio.get_running_loop()
        answered: asyncio.Future[float] = own.create_future()

        def resolve(at: float) -> None:  # on this thread's loop
            if not answered.done():
                answered.set_result(at)

        def probe() -> None:  # on the watched loop
            with contextlib.suppress(RuntimeError):  # this thread's loop is already closed
                own.call_soon_threadsafe(resolve, self._clock.monotonic())

        try:
            self._loop.call_soon_threadsafe(probe)
        except RuntimeError:
            return None
        return answered
