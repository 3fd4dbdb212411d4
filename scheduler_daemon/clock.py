"""Time source injected into every component that reads time or sleeps."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def now(self) -> datetime: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


async def wait_event(event: asyncio.Event, clock: Clock, seconds: float | None) -> bool:
    """Wait for ``event`` or ``seconds`` on ``clock``; True when the event fired."""
    if event.is_set():
        return True
    if seconds is not None and seconds <= 0:
        return False
    waiter = asyncio.ensure_future(event.wait())
    sleeper = asyncio.ensure_future(clock.sleep(seconds)) if seconds is not None else None
    pending = {waiter} if sleeper is None else {waiter, sleeper}
    try:
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for fut in pending:
            fut.cancel()
    return event.is_set()
