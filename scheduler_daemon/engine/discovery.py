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
from dataclasses import dataclass

from scheduler_daemon.clock import Clock, wait_event
from scheduler_daemon.domain.models import ClaimedTask
from scheduler_daemon.engine.executor import admit
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.limits import NO_LIMITS, ClaimPlan, QueueLimiter
from scheduler_daemon.engine.signals import DiscoverySignals
from scheduler_daemon.engine.watchdog import NOOP
from scheduler_daemon.logs import get_logger
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.store.base import EngineStore
from scheduler_daemon.store.errors import describe, is_unavailable

# When a claim took nothing although a task was due before it began (other claimers hold the
# rows' locks), look again after this long, doubling while that lasts. The ceiling is short:
# the next look is also when any other task that fell due meanwhile is claimed.
_CONTENDED_MIN_S = 0.002
_CONTENDED_MAX_S = 0.05
# While the database cannot be reached, look again after this long, doubling up to the max.
_OUTAGE_MIN_S = 0.05
_OUTAGE_MAX_S = 2.0


@dataclass(frozen=True, slots=True)
class _Round:
    """One round of claims: how many were wanted and taken, and when its first claim began."""

    want: int
    took: int
    started: float


class Discovery:
    def __init__(
        self,
        store: EngineStore,
        inflight: InFlight,
        ready: asyncio.Queue[ClaimedTask],
        owner: str,
        clock: Clock,
        batch_size: Callable[[], int],
        poll_interval_s: Callable[[], float],
        lease_s: Callable[[], float],
        metrics: Metrics | None = None,
        limiter: QueueLimiter | None = None,
        signals: DiscoverySignals | None = None,
    ) -> None:
        self._metrics = metrics
        self._limiter = limiter
        self._store = store
        self._inflight = inflight
        self._ready = ready
        self._owner = owner
        self._clock = clock
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._lease_s = lease_s
        self._wake = asyncio.Event()
        self._target = math.inf  # monotonic time at which to look again
        self._log = get_logger("discovery")
        self.claimed_total = 0
        self.signals = signals or DiscoverySignals()
        self.report_progress = NOOP
        # Paused queues as last read (the claim checks pauses itself; this only picks the claim
        # that skips their backlog, and keeps them out of the sleep computation).
        self._paused: frozenset[str] = frozenset()
        self._paused_read_at = -math.inf
        # Counts the announcements that pauses may have changed: a read that began before one
        # is stale, whenever it ends.
        self._pauses_changed = 0
        self._plan: ClaimPlan = NO_LIMITS
        if limiter is not None:
            inflight.on_queue_freed = self._queue_freed

    def notify(self, delay_s: float | None) -> None:
        """A task is due in ``delay_s`` seconds (None: unknown, look now; queues may have been
        paused or resumed)."""
        if delay_s is None:
            self._pauses_changed += 1
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
        if self._clock.monotonic() - self._paused_read_at >= self._poll_interval_s():
            await self._read_pauses()
        self._plan = self._limiter.plan() if self._limiter is not None else NO_LIMITS
        return sorted({*self._paused, *self._plan.excluded})

    async def _read_pauses(self) -> None:
        """Read the paused queues; once more if pauses were announced to change meanwhile (that
        read may predate the change). Still stale after that, the next round reads again."""
        for _ in range(2):
            changes = self._pauses_changed
            began = self._clock.monotonic()
            self._paused = await self._store.paused_queues()
            if self._pauses_changed == changes:
                self._paused_read_at = began
                return

    async def claim_once(self) -> int:
        """Claim up to the free slots; return how many were asked for minus how many came."""
        claims = await self._claim_round()
        return claims.want - claims.took

    async def _claim_round(self) -> _Round:
        if self._inflight.free == 0:
            self.signals.waiting_for_slots.emit(None)
        free = await self._inflight.wait_free()
        want = min(free, self._batch_size())
        excluded = await self._excluded()
        started = self._clock.monotonic()
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
            self.signals.claimed.emit(len(claimed))
        return _Round(want, len(claimed), started)

    def _take(self, claimed: list[ClaimedTask]) -> None:
        if not claimed:
            return
        admit(claimed, self._inflight, self._ready, self._log)
        self.claimed_total += len(claimed)
        if self._metrics is not None:
            self._metrics.claimed(claimed)

    async def run(self) -> None:
        contended = _CONTENDED_MIN_S
        outage = _OUTAGE_MIN_S
        while True:
            self.report_progress()
            self._target = math.inf
            try:
                contended = await self._round(contended)
            except Exception as exc:
                if not is_unavailable(exc):
                    raise
                # The database is down: nothing is held here (what a claim took was handed to
                # the executor), so wait and look again, backing off while it lasts.
                wait = min(outage, self._poll_interval_s())
                self._log.warning("claim_failed", error=describe(exc), retry_in_s=wait)
                outage = min(outage * 2, _OUTAGE_MAX_S)
                self._target = self._clock.monotonic() + wait
                await self._sleep_until_target()
            else:
                outage = _OUTAGE_MIN_S

    async def _round(self, contended: float) -> float:
        """Claim, then sleep until there is more to claim; the contended back-off to use next."""
        claims = await self._claim_round()
        if claims.took:
            contended = _CONTENDED_MIN_S
        if claims.took == claims.want:
            return contended  # there may be more due: claim again as soon as slots free up
        # Queues at a limit or paused are not waited for: a slot freed, a token or a resume
        # wakes discovery for them.
        blocked = sorted({*self._paused, *self._plan.blocked})
        next_due = await self._store.next_due_in(blocked)
        now = self._clock.monotonic()
        poll = self._poll_interval_s()
        if self._plan.wake_in_s is not None:
            poll = min(poll, self._plan.wake_in_s)
        if next_due is None or next_due > 0:
            contended = _CONTENDED_MIN_S
            wait = poll if next_due is None else min(next_due, poll)
        elif claims.took or -next_due < now - claims.started:
            # A task is due, but this is no contention: the claim took what was due when it
            # looked (fewer than it could), or the task fell due after the claim began (it
            # has been due for less time than this round took). Look again at once.
            contended = _CONTENDED_MIN_S
            wait = 0.0
        else:
            # Due since before the claim began, yet the claim took nothing: other claimers
            # hold those rows. Look again soon, backing off while that lasts.
            wait = min(contended, poll)
            contended = min(contended * 2, poll, _CONTENDED_MAX_S)
        self._target = min(self._target, now + wait)
        await self._sleep_until_target()
        return contended

    async def _sleep_until_target(self) -> None:
        while True:
            remaining = self._target - self._clock.monotonic()
            if remaining <= 0:
                return
            self._wake.clear()
            self.signals.slept.emit(remaining)
            await wait_event(self._wake, self._clock, remaining)
