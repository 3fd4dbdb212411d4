"""Leases: the heartbeat that renews what the in-flight ledger holds, and the rescuer."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

from scheduler_daemon.alerts import AlertSink, ignore, task_failed, task_rescued
from scheduler_daemon.clock import Clock
from scheduler_daemon.domain.models import TaskStatus
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.signals import RescuerSignals
from scheduler_daemon.engine.watchdog import NOOP
from scheduler_daemon.logs import get_logger
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.store.base import EngineStore


class LeaseStore(Protocol):
    """What the heartbeat needs of a store (PostgresStore, or the lease keeper's connection)."""

    async def renew_leases(
        self, owner: str, held: Sequence[tuple[uuid.UUID, int]], lease_s: float
    ) -> set[tuple[uuid.UUID, int]]: ...


AbortLease = Callable[[uuid.UUID, int], None]
"""Aborts one attempt whose lease is gone (``InFlight.abort``, or a hand-over of it to the
event loop when the heartbeat runs on another thread)."""


class Heartbeat:
    """Renews every held lease in one statement; aborts attempts whose lease was lost.

    ``abort`` defaults to the ledger's own; the lease keeper, which runs the heartbeat on its
    own thread, passes one that hands the abort to the event loop. Until the loop has done it
    the ledger still holds the attempt, so the heartbeat remembers what it asked to abort and
    neither renews it again nor reports it twice.
    """

    def __init__(
        self,
        store: LeaseStore,
        inflight: InFlight,
        owner: str,
        clock: Clock,
        lease_s: Callable[[], float],
        interval_s: Callable[[], float],
        abort: AbortLease | None = None,
    ) -> None:
        self._store = store
        self._inflight = inflight
        self._owner = owner
        self._clock = clock
        self._lease_s = lease_s
        self._interval_s = interval_s
        self._abort = abort or inflight.abort
        # (task, attempt) pairs whose abort was asked for and that the ledger still holds.
        self._aborting: set[tuple[uuid.UUID, int]] = set()
        self._log = get_logger("heartbeat")
        self.report_progress = NOOP

    async def beat(self) -> set[uuid.UUID]:
        """Renew once; return the ids whose lease turned out to be lost."""
        lease_s = self._lease_s()
        held = self._inflight.snapshot()
        self._aborting &= set(held)  # the ledger let go of those: forget them
        overdue = set(self._inflight.overdue(grace_s=lease_s))
        for task_id, attempt in held:
            if task_id in overdue and (task_id, attempt) not in self._aborting:
                # The executor's timeout should have ended it long ago: let the lease lapse so
                # the rescuer hands it to a healthy worker; a late result is fenced out.
                self._log.error("attempt_overdue", task_id=str(task_id), attempt=attempt)
                self._abort_one(task_id, attempt)
        held = [h for h in held if h[0] not in overdue and h not in self._aborting]
        if not held:
            return set()
        kept = await self._store.renew_leases(self._owner, held, lease_s)
        # Compare (task, attempt) pairs: an attempt recorded while the renewal ran is not lost,
        # and neither is a newer attempt of the same task claimed meanwhile.
        lost = (set(held) - kept) & set(self._inflight.snapshot())
        for task_id, attempt in lost:
            self._log.warning("lease_lost", task_id=str(task_id), attempt=attempt)
            self._abort_one(task_id, attempt)
        return {task_id for task_id, _ in lost}

    def _abort_one(self, task_id: uuid.UUID, attempt: int) -> None:
        self._aborting.add((task_id, attempt))
        self._abort(task_id, attempt)

    async def run(self) -> None:
        while True:
            await self._clock.sleep(self._interval_s())
            await self.beat()
            self.report_progress()


class Rescuer:
    """Returns tasks whose lease expired (their daemon died) to scheduled, or to failed."""

    def __init__(
        self,
        store: EngineStore,
        clock: Clock,
        interval_s: Callable[[], float],
        batch_size: int = 500,
        metrics: Metrics | None = None,
        alerts: AlertSink | None = None,
        signals: RescuerSignals | None = None,
    ) -> None:
        self._metrics = metrics
        self._alert = alerts or ignore
        self.signals = signals or RescuerSignals()
        self._store = store
        self._clock = clock
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._log = get_logger("rescuer")
        self.report_progress = NOOP

    async def sweep(self) -> int:
        total = 0
        while True:
            rescued = await self._store.rescue_expired(self._batch_size)
            for r in rescued:
                if self._metrics is not None:
                    self._metrics.lost(r.action, r.queue)
                self._log.warning(
                    "task_rescued",
                    task_id=str(r.task_id),
                    attempt=r.attempt,
                    owner=r.owner,
                    status=r.status.value,
                )
                self._alert(
                    task_rescued(r.task_id, r.action, r.queue, r.attempt, r.owner, r.status.value)
                )
                if r.status is TaskStatus.FAILED:
                    error = "lease expired on the last attempt"
                    self._log.error(
                        "task_failed", task_id=str(r.task_id), attempt=r.attempt, error=error
                    )
                    self._alert(task_failed(r.task_id, r.action, r.queue, r.attempt, error))
            total += len(rescued)
            if len(rescued) < self._batch_size:
                self.signals.swept.emit(total)
                return total

    async def run(self) -> None:
        while True:
            await self.sweep()
            self.report_progress()
            await self._clock.sleep(self._interval_s())
