"""A dedicated LISTEN connection that survives drops: reconnects and re-listens."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg

from scheduler_daemon.clock import Clock, wait_event
from scheduler_daemon.logs import get_logger
from scheduler_daemon.store.postgres import NOTIFY_CHANNEL

log = get_logger("listener")

LISTENER_APPLICATION_NAME = "scheduler-daemon-listener"
SCHEDULES_CHANNEL = "scheduler_schedules"


class NotificationListener:
    """Calls ``on_notify(delay_s)`` for every task notification.

    ``delay_s`` is the seconds until the notified task is due; ``None`` means "something may
    have been missed, look now" (sent after every (re)connect).
    """

    def __init__(
        self,
        dsn: str,
        on_notify: Callable[[float | None], None],
        clock: Clock,
        check_interval_s: float = 2.0,
        on_schedules: Callable[[], None] | None = None,
    ) -> None:
        self._dsn = dsn
        self._on_notify = on_notify
        self._on_schedules = on_schedules
        self._clock = clock
        self._check_interval_s = check_interval_s
        self.connected = asyncio.Event()
        self.reconnects = 0

    def _deliver(self, _conn: object, _pid: int, _channel: str, payload: object) -> None:
        try:
            delay: float | None = float(str(payload))
        except ValueError:
            delay = None
        self._on_notify(delay)

    def _deliver_schedules(self, _conn: object, _pid: int, _channel: str, _payload: object) -> None:
        assert self._on_schedules is not None
        self._on_schedules()

    async def run(self) -> None:
        backoff = 0.05
        first = True
        while True:
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=10,
                    server_settings={"application_name": LISTENER_APPLICATION_NAME},
                )
            except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
                log.warning("listener_connect_failed", error=str(exc), retry_in_s=backoff)
                await self._clock.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _c, lost=lost: lost.set())
            try:
                await conn.add_listener(NOTIFY_CHANNEL, self._deliver)
                if self._on_schedules is not None:
                    await conn.add_listener(SCHEDULES_CHANNEL, self._deliver_schedules)
                self.connected.set()
                if not first:
                    self.reconnects += 1
                    log.info("listener_reconnected", reconnects=self.reconnects)
                first = False
                self._on_notify(None)
                if self._on_schedules is not None:
                    self._on_schedules()
                await self._watch(conn, lost)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
                log.warning("listener_lost", error=str(exc))
            finally:
                self.connected.clear()
                with contextlib.suppress(Exception):
                    conn.terminate()

    async def _watch(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        """Return when the connection is gone; probe it so a silent drop is noticed too."""
        while not await wait_event(lost, self._clock, self._check_interval_s):
            async with asyncio.timeout(self._check_interval_s):
                await conn.fetchval("SELECT 1")
        log.warning("listener_lost", error="connection closed")
