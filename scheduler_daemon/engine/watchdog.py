"""The stall watchdog: event-loop lag and component progress, reported through /readyz.

Loop-driven components report progress each time round their loop (``Progress.reporter``);
a component that has not reported within its own allowance is stalled. Components that wait
for work (the completer) count as stalled only while work waits for them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from scheduler_daemon.alerts import AlertSink, component_stalled, ignore
from scheduler_daemon.clock import Clock
from scheduler_daemon.logs import get_logger
from scheduler_daemon.settings import WatchdogSettings


def _noop() -> None:
    return None


NOOP: Callable[[], None] = _noop


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
