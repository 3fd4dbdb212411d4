"""The lease keeper: renews this daemon's leases from a thread of its own.

Handlers share the daemon's event loop. One that calls blocking code (``time.sleep``, a
synchronous client, a long computation) holds the loop, and a heartbeat on that loop could
not renew anything until it let go: past ``executor.lease_s`` every lease of the daemon lapsed,
another daemon's rescuer took the tasks over, and unrelated tasks ended ``failed`` after
attempts "lost" to a handler they had nothing to do with.

So the heartbeat runs here, on a thread with its own event loop and its own database
connection (asyncpg objects belong to the loop that made them, so the main pool cannot be
used). It reads the held leases of the shared ``InFlight`` ledger (safe from any thread), and
hands whatever must happen on the main loop back to it with ``call_soon_threadsafe``: aborting
an attempt whose lease was lost, and the progress report to the watchdog. The thread never
dies of an error: a database error closes the connection and the next renewal opens a new
one, soon (with a back-off up to the heartbeat interval). ``stop`` ends the thread and joins
it.

Other watchers that must not depend on the main loop (``LoopBlockDetector``) run on the
keeper's loop too (``also_run``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg

from scheduler_daemon.clock import Clock
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.leases import Heartbeat
from scheduler_daemon.engine.watchdog import NOOP
from scheduler_daemon.logs import get_logger
from scheduler_daemon.store.keeper import KeeperConnection

MIN_RETRY_S = 0.1
JOIN_TIMEOUT_S = 10.0
RESTART_S = 1.0  # before an ``also_run`` coroutine that crashed runs again

DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


class LeaseKeeper:
    """Runs the heartbeat on its own thread, loop and connection (see the module docstring).

    ``start`` and ``stop`` are called on the main event loop. ``report_progress`` (the
    watchdog's reporter) is called on the main loop after each renewal round.
    """

    def __init__(
        self,
        dsn: str,
        inflight: InFlight,
        owner: str,
        clock: Clock,
        lease_s: Callable[[], float],
        interval_s: Callable[[], float],
        also_run: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
        at_stop: Sequence[Callable[[], Coroutine[Any, Any, None]]] = (),
    ) -> None:
        self._inflight = inflight
        self._clock = clock
        self._interval_s = interval_s
        self._also_run = list(also_run)
        self._at_stop = list(at_stop)
        self._connection = KeeperConnection(dsn, interval_s)
        self._heartbeat = Heartbeat(
            self._connection,
            inflight,
            owner,
            clock,
            lease_s=lease_s,
            interval_s=interval_s,
            abort=self._abort,
        )
        self._log = get_logger("lease_keeper")
        self._main: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._wake: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None
        self.report_progress: Callable[[], None] = NOOP
        self.rounds = 0  # renewal rounds that succeeded
        self.failing_since: float | None = None  # monotonic time of the first failed round
        self.last_error: str | None = None

    @property
    def connections_opened(self) -> int:
        return self._connection.opened

    @property
    def connection(self) -> KeeperConnection:
        """The keeper's connection, for what else runs on its thread (``also_run``)."""
        return self._connection

    def run_also(self, *runs: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """More coroutines to run on the keeper's loop (as ``also_run``); before ``start``."""
        self._also_run.extend(runs)

    def on_stop(self, *steps: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Coroutines run on the keeper's loop when it stops, before its connection closes
        (as ``at_stop``); before ``start``."""
        self._at_stop.extend(steps)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Start the thread; the main loop is the running loop of the caller. Once stopped,
        a keeper stays stopped (``start`` does nothing then)."""
        if self._thread is not None or self._stopping:
            return
        self._main = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._main_thread, name="lease-keeper", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """End the thread (its renewals, ``also_run``) and wait for it; idempotent."""
        with self._lock:
            self._stopping = True
            wake = self._wake
        if wake is not None:
            loop, event = wake
            with contextlib.suppress(RuntimeError):  # its loop is closed: the thread is ending
                loop.call_soon_threadsafe(event.set)
        thread = self._thread
        if thread is None:
            return
        await asyncio.to_thread(thread.join, JOIN_TIMEOUT_S)
        if thread.is_alive():
            self._log.error("lease_keeper_stop_timeout", waited_s=JOIN_TIMEOUT_S)

    def problems(self) -> list[str]:
        """For /readyz: why leases are not being renewed right now."""
        if self._thread is not None and not self._thread.is_alive() and not self._stopping:
            return ["lease keeper thread is not running"]
        since = self.failing_since
        if since is not None and self._clock.monotonic() - since > self._interval_s():
            return [f"lease keeper cannot renew leases: {self.last_error}"]
        return []

    # -- on the keeper's thread -----------------------------------------------------------

    def _main_thread(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException:  # never silently: the log says the leases are left to lapse
            self._log.critical("lease_keeper_died", exc_info=True)

    async def _run(self) -> None:
        wake = asyncio.Event()
        with self._lock:
            self._wake = (asyncio.get_running_loop(), wake)
            if self._stopping:
                return
        self._log.info("lease_keeper_started")
        tasks = [asyncio.create_task(self._keep(), name="renew_leases")]
        tasks += [
            asyncio.create_task(self._guarded(run), name=run.__qualname__) for run in self._also_run
        ]
        try:
            await wake.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for last in self._at_stop:
                try:
                    await last()
                except Exception:
                    self._log.warning("lease_keeper_stop_step_failed", exc_info=True)
            await self._connection.close()
            self._log.info("lease_keeper_stopped")

    async def _guarded(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``run`` until it returns; a crash is logged and it starts again a moment later."""
        while True:
            try:
                await run()
                return
            except Exception:
                self._log.error("lease_keeper_task_crashed", task=run.__qualname__, exc_info=True)
            await asyncio.sleep(RESTART_S)

    async def _keep(self) -> None:
        retry_s = MIN_RETRY_S
        delay = self._interval_s()
        with contextlib.suppress(*DB_ERRORS):
            await self._connection.open()  # now, not in the middle of work; else at a renewal
        while True:
            await asyncio.sleep(delay)
            try:
                await self._heartbeat.beat()
            except DB_ERRORS as exc:
                self._failed(exc, retry_s)
                await self._connection.close()
            except Exception as exc:  # not the database: logged with its traceback, retried
                self._failed(exc, retry_s, exc_info=True)
                await self._connection.close()
            else:
                if self.failing_since is not None:
                    self._log.info("lease_renewal_recovered", error=self.last_error)
                self.failing_since = None
                self.rounds += 1
                self._post(self.report_progress)
                retry_s = MIN_RETRY_S
                delay = self._interval_s()
                continue
            # Soon again (the leases are running out), backing off up to the interval.
            delay = min(retry_s, self._interval_s())
            retry_s = min(retry_s * 2, self._interval_s())

    def _failed(self, exc: BaseException, retry_s: float, exc_info: bool = False) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.failing_since is None:
            self.failing_since = self._clock.monotonic()
        self._log.error(
            "lease_renewal_failed",
            error=self.last_error,
            retry_in_s=min(retry_s, self._interval_s()),
            held=len(self._inflight),
            exc_info=exc_info,
        )

    def _abort(self, task_id: uuid.UUID, attempt: int) -> None:
        """A lost lease: abort the attempt on the main loop (it cancels an asyncio task)."""
        self._post(self._inflight.abort, task_id, attempt)

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        main = self._main
        if main is None:
            return
        with contextlib.suppress(RuntimeError):  # the main loop is closed: the daemon is ending
            main.call_soon_threadsafe(callback, *args)
