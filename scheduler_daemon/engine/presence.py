"""Presence: this daemon's row in ``workers`` (the actions it runs), refreshed while it runs
and removed when it stops, so that every replica, the API and the dashboard can tell due tasks
that no running daemon can run. It runs on the lease keeper's thread, on its connection: like
the leases, it goes on while a handler holds the main loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from scheduler_daemon.clock import Clock
from scheduler_daemon.logs import get_logger
from scheduler_daemon.store.errors import describe, is_unavailable

PRESENCE_INTERVAL_S = 5.0


class PresenceStore(Protocol):
    async def register(self, owner: str, actions: Sequence[str]) -> None: ...

    async def unregister(self, owner: str) -> None: ...


class Presence:
    def __init__(
        self, store: PresenceStore, owner: str, actions: Sequence[str], clock: Clock
    ) -> None:
        self._store = store
        self._owner = owner
        self._actions = sorted(actions)
        self._clock = clock
        self._log = get_logger("presence")

    async def run(self) -> None:
        while True:
            try:
                await self._store.register(self._owner, self._actions)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # Nothing is lost: the row is refreshed at the next pass.
                self._log.warning("presence_failed", error=describe(exc))
            await self._clock.sleep(PRESENCE_INTERVAL_S)

    async def leave(self) -> None:
        """Remove this daemon's row (at the end of a drain); other daemons forget it anyway
        once it is no longer refreshed."""
        try:
            await self._store.unregister(self._owner)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            self._log.warning("presence_leave_failed", error=describe(exc))
