"""Executor capacity shared by discovery (takes) and workers (give back): backpressure.

Slots also count the tasks in the pool per queue, which is what a queue's per-daemon
concurrency limit compares against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class Slots:
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._in_use = 0
        self._changed = asyncio.Event()
        self._by_queue: dict[str, int] = {}
        # Called with a queue's name whenever one of its tasks leaves the pool.
        self.on_queue_freed: Callable[[str], None] | None = None

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def in_use(self) -> int:
        return self._in_use

    @property
    def free(self) -> int:
        return max(self._capacity - self._in_use, 0)

    def running_in(self, queue: str) -> int:
        """Tasks of ``queue`` claimed by this daemon and not yet finished."""
        return self._by_queue.get(queue, 0)

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

    def enter(self, queue: str) -> None:
        """A claimed task of ``queue`` holds one of the slots taken."""
        self._by_queue[queue] = self._by_queue.get(queue, 0) + 1

    def give(self, n: int = 1, queue: str | None = None) -> None:
        """Give back ``n`` slots; ``queue``: the one task that held it has left the pool."""
        self._in_use -= n
        if queue is not None:
            left = self._by_queue.get(queue, 0) - 1
            if left > 0:
                self._by_queue[queue] = left
            else:
                self._by_queue.pop(queue, None)
            if self.on_queue_freed is not None:
                self.on_queue_freed(queue)
        self._changed.set()

    def resize(self, capacity: int) -> None:
        self._capacity = capacity
        self._changed.set()
