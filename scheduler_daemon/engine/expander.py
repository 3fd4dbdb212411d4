"""The recurrence expander: turns schedule occurrences due within the horizon into tasks, a
batch of schedules per pass, woken by NOTIFY when a schedule changes."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from scheduler_daemon.alerts import AlertSink, ignore, schedule_misfired
from scheduler_daemon.clock import Clock, wait_event
from scheduler_daemon.domain.recurrence import EvaluationLimit
from scheduler_daemon.domain.schedules import Expansion, Schedule, plan_expansion
from scheduler_daemon.engine.signals import ExpanderSignals
from scheduler_daemon.engine.watchdog import NOOP
from scheduler_daemon.logs import get_logger
from scheduler_daemon.store.base import ExpansionStore

_CONTENDED_S = 0.05  # due schedules locked by another expander: look again soon
# A rule whose next occurrences cost more than the evaluation bound: look again this much
# later (the schedule is not finished; each look costs at most the bound).
LIMITED_RETRY_S = 300.0


class Expander:
    def __init__(
        self,
        store: ExpansionStore,
        clock: Clock,
        horizon_s: Callable[[], float],
        batch_size: Callable[[], int],
        poll_interval_s: Callable[[], float],
        rng: random.Random | None = None,
        alerts: AlertSink | None = None,
        signals: ExpanderSignals | None = None,
    ) -> None:
        self._store = store
        self._alert = alerts or ignore
        self._clock = clock
        self._horizon_s = horizon_s
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._rng = rng
        self._wake = asyncio.Event()
        self._log = get_logger("expander")
        self.passes = 0
        self.statements = 0
        self.created = 0
        self.idle = asyncio.Event()  # set while it waits
        self.signals = signals or ExpanderSignals()
        self.report_progress = NOOP

    def notify(self) -> None:
        """A schedule was created or changed: look now."""
        self._wake.set()

    def _plan(self, schedule: Schedule, busy: bool, now: datetime) -> Expansion:
        try:
            return plan_expansion(
                schedule, now=now, horizon_s=self._horizon_s(), busy=busy, rng=self._rng
            )
        except EvaluationLimit as exc:
            self._log.warning(
                "schedule_evaluation_limit",
                schedule_id=str(schedule.id),
                field=exc.field,
                error=exc.message,
                retry_in_s=LIMITED_RETRY_S,
            )
            return deferred(schedule, now, LIMITED_RETRY_S)

    async def expand_due(self) -> int:
        """Expand every schedule that is due, a batch per pass; the tasks created."""
        created = 0
        planned: dict[uuid.UUID, Schedule] = {}  # this pass's, for the alerts

        def plan(schedule: Schedule, busy: bool, now: datetime) -> Expansion:
            planned[schedule.id] = schedule
            return self._plan(schedule, busy, now)

        while True:
            batch = self._batch_size()
            planned.clear()
            result = await self._store.expand(batch, plan)
            self.passes += 1
            self.statements += result.statements
            for expansion in result.expansions:
                created += len(expansion.tasks)
                if expansion.missed or expansion.skipped:
                    self._log.info(
                        "schedule_misfired" if expansion.missed else "occurrences_skipped",
                        schedule_id=str(expansion.schedule_id),
                        missed=expansion.missed,
                        skipped=expansion.skipped,
                        created=len(expansion.tasks),
                    )
                if expansion.missed:
                    self._misfired(expansion, planned.get(expansion.schedule_id))
            if len(result.expansions) < batch:
                self.created += created
                self.signals.expanded.emit(created)
                return created

    def _misfired(self, expansion: Expansion, schedule: Schedule | None) -> None:
        self._alert(
            schedule_misfired(
                expansion.schedule_id,
                None if schedule is None else schedule.name,
                missed=expansion.missed,
                skipped=expansion.skipped,
                policy=None if schedule is None else schedule.misfire_policy.value,
                action=None if schedule is None else schedule.template.action,
                queue=None if schedule is None else schedule.template.queue,
            )
        )

    async def run(self) -> None:
        while True:
            self.report_progress()
            self._wake.clear()
            await self.expand_due()
            delay = await self._store.next_expansion_in()
            poll = self._poll_interval_s()
            if delay is None:
                wait = poll
            elif delay <= 0:
                wait = _CONTENDED_S
            else:
                wait = min(delay, poll)
            self.idle.set()
            self.signals.slept.emit(wait)
            try:
                await wait_event(self._wake, self._clock, wait)
            finally:
                self.idle.clear()


def deferred(schedule: Schedule, now: datetime, retry_s: float) -> Expansion:
    """An expansion that makes nothing and keeps the schedule as it is (its next run stays),
    to be looked at again ``retry_s`` from ``now``: for a rule whose evaluation hit the
    bound, which is not a rule that has ended."""
    return Expansion(
        schedule_id=schedule.id,
        tasks=[],
        next_run_at=schedule.next_run_at,
        expand_at=now + timedelta(seconds=retry_s),
        last_task_id=schedule.last_task_id,
    )
