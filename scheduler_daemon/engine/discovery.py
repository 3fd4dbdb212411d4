"""Postgres discovery: claims due tasks (as many as the executor has free slots, and as many as
queue limits allow) and sleeps precisely until the next one is due, woken early by
LISTEN/NOTIFY.

Limited queues are claimed first, each up to its room, then every other queue at once; queues
at a limit and paused queues are left out of both the claim and the sleep computation, and a
task of a limited queue leaving the pool (or its next rate token) wakes discovery.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

from scheduler_daemon.clock import Clock, wait_event
from scheduler_daemon.domain.models import ClaimedTask
from scheduler_daemon.engine.executor import admit
from scheduler_daemon.engine.leases import LeaseRegistry
from scheduler_daemon.engine.limits import NO_LIMITS, ClaimPlan, QueueLimiter
from scheduler_daemon.engine.slots import Slots
from scheduler_daemon.engine.watchdog import NOOP
from scheduler_daemon.logs import get_logger
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.store.base import EngineStore

# When a claim came up short although tasks are due (other daemons hold their row locks),
# look again after this long, doubling up to the poll interval.
_CONTENDED_MIN_S = 0.002


class Discovery:
    def __init__(
        self,
        store: EngineStore,
        slots: Slots,
        ready: asyncio.Queue[ClaimedTask],
        registry: LeaseRegistry,
        owner: str,
        clock: Clock,
        batch_size: Callable[[], int],
        poll_interval_s: Callable[[], float],
        lease_s: Callable[[], float],
        metrics: Metrics | None = None,
        limiter: QueueLimiter | None = None,
    ) -> None:
        self._metrics = metrics
        self._limiter = limiter
        self._store = store
        self._slots = slots
        self._ready = ready
        self._registry = registry
        self._owner = owner
        self._clock = clock
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._lease_s = lease_s
        self._wake = asyncio.Event()
        self._target = math.inf  # monotonic time at which to look again
        self._log = get_logger("discovery")
        self.claimed_total = 0
        self.sleeping = asyncio.Event()  # set while it waits for due work (tests await it)
        self.report_progress = NOOP
        # Paused queues as last read (the claim checks pauses itself; this only picks the claim
        # that skips their backlog, and keeps them out of the sleep computation).
        self._paused: frozenset[str] = frozenset()
        self._paused_read_at = -math.inf
        self._plan: ClaimPlan = NO_LIMITS
        if limiter is not None:
            slots.on_queue_freed = self._queue_freed

    def notify(self, delay_s: float | None) -> None:
        """A task is due in ``delay_s`` seconds (None: unknown, look now; queues may have been
        paused or resumed)."""
        if delay_s is None:
            self._paused_read_at = -math.inf
        due_at = self._clock.monotonic() + (delay_s if delay_s and delay_s > 0 else 0.0)
        if due_at < self._target:
            self._target = due_at
            self._wake.set()

    def _queue_freed(self, queue: str) -> None:
        if queue in self._plan.blocked:
            self.notify(0.0)

    async def _excluded(self) -> list[str]:
        """Queues the general claim leaves out: paused ones and the limited ones."""
        now = self._clock.monotonic()
        if now - self._paused_read_at >= self._poll_interval_s():
            self._paused = await self._store.paused_queues()
            self._paused_read_at = now
        self._plan = self._limiter.plan() if self._limiter is not None else NO_LIMITS
        return sorted({*self._paused, *self._plan.excluded})

    async def claim_once(self) -> int:
        """Claim up to the free slots; return how many were asked for minus how many came."""
        free = await self._slots.wait_free()
        want = min(free, self._batch_size())
        excluded = await self._excluded()
        claimed: list[ClaimedTask] = []
        try:
            for queue, room in self._plan.limited.items():
                left = want - len(claimed)
                if left <= 0:
                    break
                if queue in self._paused:
                    continue
                got = await self._store.claim_queue(
                    self._owner,
                    queue,
                    left if room.room is None else min(room.room, left),
                    self._lease_s(),
                    room.global_limit,
                )
                if self._limiter is not None:
                    self._limiter.took(queue, len(got))
                claimed.extend(got)
            if len(claimed) < want:
                claimed.extend(
                    await self._store.claim(
                        self._owner, want - len(claimed), self._lease_s(), excluded
                    )
                )
        finally:
            # Whatever was claimed runs, also when a later claim of this round failed.
            self._take(claimed)
            if self._limiter is not None:
                self._plan = self._limiter.plan()  # what is blocked now, after this claim
        return want - len(claimed)

    def _take(self, claimed: list[ClaimedTask]) -> None:
        if not claimed:
            return
        self._slots.take(len(claimed))
        admit(claimed, self._slots, self._registry, self._ready, self._log)
        self.claimed_total += len(claimed)
        if self._metrics is not None:
            self._metrics.claimed(claimed)

    async def run(self) -> None:
        contended = _CONTENDED_MIN_S
        while True:
            self.report_progress()
            self._target = math.inf
            shortfall = await self.claim_once()
            if shortfall == 0:
                continue  # there may be more due: claim again as soon as slots free up
            # Queues at a limit or paused are not waited for: a slot freed, a token or a resume
            # wakes discovery for them.
            blocked = sorted({*self._paused, *self._plan.blocked})
            next_due = await self._store.next_due_in(blocked)
            now = self._clock.monotonic()
            poll = self._poll_interval_s()
            if self._plan.wake_in_s is not None:
                poll = min(poll, self._plan.wake_in_s)
            if next_due is not None and next_due <= 0:
                # Due rows exist but were locked by another claimer: look again soon.
                wait = min(contended, poll)
                contended = min(contended * 2, poll)
            else:
                contended = _CONTENDED_MIN_S
                wait = poll if next_due is None else min(next_due, poll)
            self._target = min(self._target, now + wait)
            await self._sleep_until_target()

    async def _sleep_until_target(self) -> None:
        self.sleeping.set()
        try:
            while True:
                remaining = self._target - self._clock.monotonic()
                if remaining <= 0:
                    return
                self._wake.clear()
                await wait_event(self._wake, self._clock, remaining)
        finally:
            self.sleeping.clear()
