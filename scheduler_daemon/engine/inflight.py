"""The in-flight ledger: every task this daemon claimed and has not yet recorded, and the
executor capacity they take.

One ledger, two lifetimes per task:

* its **slot**, from the claim (``admit``) until its attempt ends (``finish``): the executor's
  capacity, the backpressure of discovery and of the SQS pollers (``wait_free``), the count per
  queue that a queue's per-daemon ``concurrency`` compares against (``running_in``), and what a
  drain waits for (``wait_idle``);
* its **lease**, from the claim until the attempt is recorded, fenced out or put back
  (``release``), or found lost (``abort``): what the heartbeat renews (``snapshot``), what a
  stuck attempt is found by (``overdue``), and the running attempt a lost lease cancels
  (``attach``/``detach``).

A slot can also be *reserved* without a task: the SQS pollers reserve the slots of a receive
before they know which tasks it brings (so that two pollers never ask for the same free slots)
and give back what the receive did not fill (``unreserve``). Reserved slots count as in use:
``in_use`` (the ``scheduler_executor_busy`` gauge) is running attempts plus reservations.

Threads: everything is changed on the event loop. The slot counters are read there only. The
leases are also read by the lease keeper's thread (``snapshot``, ``overdue``, ``len``), so that
they are renewed even while a handler holds the loop: every access to them takes a lock, held
for the dict operation alone and never across an await, so the loop never waits for the keeper
longer than a copy takes. ``abort`` cancels an asyncio task: call it on the loop (the keeper
hands it over with ``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from scheduler_daemon.clock import Clock
from scheduler_daemon.domain.models import ClaimedTask


@dataclass(slots=True)
class Held:
    """One held lease: the claimed attempt and what became of it."""

    task: ClaimedTask
    since: float  # monotonic time of the claim
    running: asyncio.Future[Any] | None = None
    lost: bool = False  # the lease is gone (abort)
    timed_out: bool = False  # the attempt ran past its timeout (the executor's timer)


class InFlight:
    def __init__(self, capacity: int, clock: Clock) -> None:
        self._clock = clock
        self._capacity = capacity
        self._running = 0  # admitted tasks whose attempt has not ended
        self._reserved = 0  # slots reserved for a receive, not yet filled
        self._by_queue: dict[str, int] = {}
        self._changed = asyncio.Event()
        self._held: dict[uuid.UUID, Held] = {}
        self._lock = threading.Lock()
        # Called with a queue's name whenever one of its tasks leaves the pool.
        self.on_queue_freed: Callable[[str], None] | None = None

    # -- capacity (on the event loop) -------------------------------------------------------

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def running(self) -> int:
        """Admitted tasks whose attempt has not ended."""
        return self._running

    @property
    def reserved(self) -> int:
        """Slots reserved by the SQS pollers and not filled (nor given back) yet."""
        return self._reserved

    @property
    def in_use(self) -> int:
        """Slots taken: running attempts and reservations (``scheduler_executor_busy``)."""
        return self._running + self._reserved

    @property
    def free(self) -> int:
        return max(self._capacity - self.in_use, 0)

    def running_in(self, queue: str) -> int:
        """Tasks of ``queue`` admitted here whose attempt has not ended."""
        return self._by_queue.get(queue, 0)

    def resize(self, capacity: int) -> None:
        """A new ``executor.concurrency`` (a reload): waiters look again."""
        self._capacity = capacity
        self._changed.set()

    async def wait_free(self) -> int:
        """Wait until at least one slot is free; return how many are."""
        while self.free == 0:
            self._changed.clear()
            await self._changed.wait()
        return self.free

    async def wait_idle(self) -> None:
        """Wait until no slot is taken: every attempt ended, every reservation given back."""
        while self.in_use > 0:
            self._changed.clear()
            await self._changed.wait()

    def reserve(self, n: int) -> None:
        """Take ``n`` slots for tasks not claimed yet (an SQS receive)."""
        self._reserved += n

    def unreserve(self, n: int) -> None:
        """Give back ``n`` reserved slots that no task took."""
        if n:
            self._reserved -= n
            self._changed.set()

    # -- a task's way through -------------------------------------------------------------

    def admit(self, tasks: Sequence[ClaimedTask], *, reserved: bool = False) -> None:
        """Claimed tasks: each takes a slot (with ``reserved``, one reserved for it), counts in
        its queue, and its lease is held (one lock for the batch)."""
        if not tasks:
            return
        n = len(tasks)
        self._running += n
        if reserved:
            self._reserved -= n
        by_queue = self._by_queue
        for task in tasks:
            by_queue[task.queue] = by_queue.get(task.queue, 0) + 1
        since = self._clock.monotonic()
        with self._lock:
            for task in tasks:
                self._held[task.id] = Held(task, since)

    def finish(self, task: ClaimedTask) -> None:
        """The attempt of ``task`` ended (whatever its outcome, also after ``abort``): its
        slot goes back and its queue counts one less. Its lease, if still held, stays held
        until the result is recorded (``release``)."""
        self._running -= 1
        queue = task.queue
        left = self._by_queue.get(queue, 0) - 1
        if left > 0:
            self._by_queue[queue] = left
        else:
            self._by_queue.pop(queue, None)
        if self.on_queue_freed is not None:
            self.on_queue_freed(queue)
        self._changed.set()

    def release(self, task_ids: Iterable[uuid.UUID]) -> None:
        """This daemon is done with these attempts (recorded, fenced out, or put back): their
        leases are no longer held."""
        with self._lock:
            for task_id in task_ids:
                self._held.pop(task_id, None)

    # -- the held leases (read from any thread) -------------------------------------------

    def __len__(self) -> int:
        """How many leases are held."""
        with self._lock:
            return len(self._held)

    def __contains__(self, task_id: object) -> bool:
        with self._lock:
            return task_id in self._held

    def snapshot(self) -> list[tuple[uuid.UUID, int]]:
        """(task id, attempt) of every held lease, in claim order; safe from any thread."""
        with self._lock:
            return [(h.task.id, h.task.attempt) for h in self._held.values()]

    def overdue(self, grace_s: float) -> list[uuid.UUID]:
        """Held far past their own timeout: something is stuck; stop renewing those."""
        now = self._clock.monotonic()
        with self._lock:
            held = list(self._held.values())
        return [h.task.id for h in held if now - h.since > h.task.timeout_s + grace_s]

    def attach(self, task_id: uuid.UUID, running: asyncio.Future[Any]) -> Held | None:
        """The attempt of a held task started as ``running``; None if its lease is gone."""
        with self._lock:
            held = self._held.get(task_id)
            if held is not None:
                held.running = running
            return held

    def detach(self, task_id: uuid.UUID) -> None:
        """The attempt ended: a lost lease no longer reaches it."""
        with self._lock:
            held = self._held.get(task_id)
            if held is not None:
                held.running = None

    def abort(self, task_id: uuid.UUID, attempt: int | None = None) -> None:
        """The lease is gone: stop the attempt and forget the lease; nothing gets recorded.
        (The slot goes back when the attempt ends, by ``finish``.)

        With ``attempt``, only that attempt is aborted: a lease found lost by the keeper's
        thread is aborted a moment later on the loop, and by then the task may be held for a
        newer attempt. Call it on the event loop (it cancels the attempt's asyncio task).
        """
        with self._lock:
            held = self._held.get(task_id)
            if held is None or (attempt is not None and held.task.attempt != attempt):
                return
            del self._held[task_id]
            held.lost = True
            running = held.running
        if running is not None:
            running.cancel()
