"""Readiness: the reasons, if any, why this daemon should not get traffic now."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from scheduler_daemon.store.base import TaskStore
from scheduler_daemon.store.errors import describe, is_unavailable

PING_TIMEOUT_S = 2.0


class Health:
    def __init__(
        self,
        store: TaskStore,
        listener_connected: Callable[[], bool],
        component_problems: Callable[[], list[str]],
    ) -> None:
        self._store = store
        self._listener_connected = listener_connected
        self._component_problems = component_problems
        self.draining = False
        self.started = False

    async def problems(self) -> list[str]:
        reasons: list[str] = []
        if self.draining:
            reasons.append("draining: shutting down")
        if not self.started:
            reasons.append("starting")
        try:
            async with asyncio.timeout(PING_TIMEOUT_S):
                await self._store.ping()
        except TimeoutError:
            reasons.append(f"database unreachable: no answer within {PING_TIMEOUT_S:g}s")
        except Exception as exc:
            # Not ready either way; the wording tells an outage from, say, refused credentials.
            what = "unreachable" if is_unavailable(exc) else "check failed"
            reasons.append(f"database {what}: {describe(exc)}")
        if not self._listener_connected():
            reasons.append("database LISTEN connection is down")
        reasons.extend(self._component_problems())
        return reasons
