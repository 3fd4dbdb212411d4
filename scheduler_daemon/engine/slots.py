"""Executor capacity shared by discovery (takes) and workers (give back): backpressure."""

from __future__ import annotations

import asyncio


class Slots:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._in_use = 0
        self._changed = asyncio.Event()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def free(self) -> int:
        return max(self._capacity - self._in_use, 0)

    async def wait_free(self) -> int:
        """Wait until at least one slot is free; return how many are."""
        while self.free == 0:
            self._changed.clear()
            await self._changed.wait()
        return self.free

    async def wait_idle(self) -> None:
        while self._in_use > 0:
            self._changed.clear()
            await self._changed.wait()

    def take(self, n: int) -> None:
        self._in_use += n

    def give(self, n: int = 1) -> None:
        self._in_use -= n
        self._changed.set()

    def resize(self, capacity: int) -> None:
        self._capacity = capacity
        self._changed.set()
