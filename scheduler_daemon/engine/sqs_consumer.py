"""The consumer side of the eventbridge backend: wake-ups from the queue to the executor.

``Consumer`` long-polls the wake-up queue (``engine/wakeups.py``: SQS in production), never
asking for more messages than the executor has free slots, and claims each message's task in
PostgreSQL by id. ``Messages`` keeps the messages of running tasks invisible (their visibility
extended ahead of expiry), deletes them once the attempt is recorded, and on shutdown makes
those of tasks put back visible at once.

A wake-up names the task and the scheduling (its ``wake_version``, the series) it was
published for. The queue delivers at least once, so a message whose task is no longer
scheduled under that series (cancelled, finished, running, scheduled anew) is deleted without
running anything. A message that is no wake-up at all is malformed: deleted, counted and
logged without its body, while the rest of its receive goes on.

A receive cut short keeps what it settled: tasks it claimed keep their slots, and on a crash or
a stop the messages it had not settled yet are made visible again at once (after a database or
queue error they come back with their visibility timeout, as every receive counts towards the
queue's redrive policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field

import asyncpg

from scheduler_daemon.clock import Clock
from scheduler_daemon.domain.models import ClaimedTask, TaskStatus
from scheduler_daemon.engine.executor import admit
from scheduler_daemon.engine.inflight import InFlight
from scheduler_daemon.engine.limits import NO_LIMITS, ClaimPlan, QueueLimiter
from scheduler_daemon.engine.signals import ConsumerSignals
from scheduler_daemon.engine.wakeups import (
    MAX_BATCH,
    Delivery,
    Malformed,
    RemoteError,
    WakeUp,
    WakeUpQueue,
    describe_error,
)
from scheduler_daemon.engine.watchdog import NOOP
from scheduler_daemon.logs import get_logger
from scheduler_daemon.metrics import Metrics
from scheduler_daemon.store.base import MessageTask, OutboxStore

MAX_VISIBILITY_S = 43_000  # SQS allows 12 hours (43,200 s) from the receive
# A message due this soon is held in memory (its slot kept) and claimed at run_at; one due
# later is made invisible until about a second before run_at.
HOLD_IN_PROCESS_S = 2.0
# A due message whose queue is paused, or at a limit, comes back after this long (at least:
# a rate limit's next token may be further away).
PAUSED_RECHECK_S = 15
LIMITED_RECHECK_S = 2
# A wake-up of a task whose action this daemon does not run comes back (or goes to another
# daemon's consumer) after this long.
UNRUNNABLE_RECHECK_S = 5
DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    queue_url: str
    wait_time_s: int = 20
    visibility_timeout_s: int = 60
    pollers: int = 2


@dataclass(slots=True)
class Intake:
    """What became of one receive's messages so far: the reserved slots they keep (tasks
    claimed, messages held until run_at) and the receipts not yet settled (claimed, held,
    deleted, or made invisible until later)."""

    unsettled: set[str] = field(default_factory=set)
    kept: int = 0

    def settle(self, receipts: Iterable[str]) -> None:
        self.unsettled.difference_update(receipts)


class Messages:
    """The receipts of messages whose tasks this daemon runs."""

    def __init__(
        self,
        queue: WakeUpQueue,
        inflight: InFlight,
        clock: Clock,
        options: Callable[[], ConsumerOptions],
    ) -> None:
        self._queue = queue
        self._inflight = inflight
        self._clock = clock
        self._options = options
        self._receipts: dict[uuid.UUID, str] = {}
        self._spent: asyncio.Queue[str] = asyncio.Queue()
        self._log = get_logger("sqs_messages")
        self.deleted_total = 0

    def __len__(self) -> int:
        return len(self._receipts)

    def track(self, task_id: uuid.UUID, receipt: str) -> None:
        self._receipts[task_id] = receipt

    def discard(self, receipt: str) -> None:
        """A message to delete now (stale, duplicate, malformed)."""
        self._spent.put_nowait(receipt)

    def recorded(self, task_ids: Iterable[uuid.UUID]) -> None:
        """Attempts recorded (or fenced out): their messages are spent."""
        for task_id in task_ids:
            receipt = self._receipts.pop(task_id, None)
            if receipt is not None:
                self._spent.put_nowait(receipt)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(self._extend_loop())
            group.create_task(self._delete_loop())

    async def flush(self) -> None:
        """Wait until every spent message is deleted (or given up on)."""
        await self._spent.join()

    async def make_visible(self, task_ids: Iterable[uuid.UUID]) -> None:
        """Tasks put back on shutdown: their messages are delivered again at once."""
        receipts = [r for t in task_ids if (r := self._receipts.pop(t, None)) is not None]
        await self.set_visibility(receipts, 0)

    async def set_visibility(self, receipts: Sequence[str], seconds: int) -> None:
        await self.set_visibilities([(r, seconds) for r in receipts])

    async def set_visibilities(self, changes: Sequence[tuple[str, int]]) -> None:
        """Visibility timeouts of received messages, (receipt, seconds) each, a batch a call."""
        queue_url = self._options().queue_url
        for i in range(0, len(changes), MAX_BATCH):
            chunk = changes[i : i + MAX_BATCH]
            try:
                refused = await self._queue.change_visibility(queue_url, chunk)
            except RemoteError as exc:
                self._log.warning("visibility_change_failed", error=str(exc), messages=len(chunk))
                continue
            for failed in refused:
                self._log.warning(
                    "visibility_change_refused", code=failed.code, error=failed.message
                )

    async def extend(self) -> None:
        """Push the expiry of every running task's message one visibility timeout ahead;
        messages whose task is no longer held (its lease was lost) are spent."""
        for task_id in [t for t in self._receipts if t not in self._inflight]:
            self._spent.put_nowait(self._receipts.pop(task_id))
        timeout_s = self._options().visibility_timeout_s
        receipts = list(self._receipts.values())
        await self.set_visibility(receipts, timeout_s)
        if receipts:
            self._log.debug("messages_extended", messages=len(receipts), timeout_s=timeout_s)

    async def _extend_loop(self) -> None:
        if self._receipts:
            # A restart after a crash: the last extension may be most of a timeout ago.
            await self.extend()
        while True:
            # A third of the timeout: every message is extended with two thirds of it left.
            await self._clock.sleep(max(self._options().visibility_timeout_s / 3, 1.0))
            await self.extend()

    async def _delete_loop(self) -> None:
        while True:
            batch = [await self._spent.get()]
            while len(batch) < MAX_BATCH and not self._spent.empty():
                batch.append(self._spent.get_nowait())
            try:
                await self._delete(batch)
            except BaseException:
                # A crash or a stop mid-call: kept for this loop's next run (put back before
                # task_done, so that flush() still waits for them).
                for receipt in batch:
                    self._spent.put_nowait(receipt)
                raise
            finally:
                for _ in batch:
                    self._spent.task_done()

    async def _delete(self, receipts: list[str]) -> None:
        backoff = 0.2
        for _ in range(5):
            try:
                deleted, refused = await self._queue.delete(self._options().queue_url, receipts)
            except RemoteError as exc:
                self._log.warning("message_delete_failed", error=str(exc), retry_in_s=backoff)
                await self._clock.sleep(backoff)
                backoff *= 2
                continue
            self.deleted_total += deleted
            for failed in refused:
                # An old receipt (the message was received again meanwhile): the newer
                # delivery finds the task done and deletes it.
                self._log.info("message_delete_refused", code=failed.code, error=failed.message)
            return
        # Not lost either way: the message comes back and is dropped as stale.
        self._log.warning("message_delete_abandoned", messages=len(receipts))


class Consumer:
    def __init__(
        self,
        outbox: OutboxStore,
        queue: WakeUpQueue,
        messages: Messages,
        inflight: InFlight,
        ready: asyncio.Queue[ClaimedTask],
        owner: str,
        clock: Clock,
        options: Callable[[], ConsumerOptions],
        lease_s: Callable[[], float],
        metrics: Metrics | None = None,
        limiter: QueueLimiter | None = None,
        signals: ConsumerSignals | None = None,
    ) -> None:
        self._limiter = limiter
        self._outbox = outbox
        self._queue = queue
        self._messages = messages
        self._inflight = inflight
        self._ready = ready
        self._owner = owner
        self._clock = clock
        self._options = options
        self._lease_s = lease_s
        self._metrics = metrics
        self._log = get_logger("consumer")
        self._held: dict[str, WakeUp] = {}  # messages held in memory until run_at
        self._holds: set[asyncio.Task[None]] = set()
        self.claimed_total = 0
        self.signals = signals or ConsumerSignals()
        self.report_progress = NOOP

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self._options().pollers):
                    group.create_task(self._poll())
        finally:
            for hold in list(self._holds):
                hold.cancel()
            # Held messages go back to the queue at once for whoever runs next.
            held = list(self._held)
            self._held.clear()
            await self._hand_back(held)

    async def _poll(self) -> None:
        backoff = 0.0
        while True:
            free = await self._inflight.wait_free()
            want = min(free, MAX_BATCH)
            # Reserved (and counted as in use): other pollers see only what is left.
            self._inflight.reserve(want)
            intake = Intake()
            try:
                received = await self._receive(want)
                self.report_progress()
                backoff = 0.0
                await self.handle(received, intake)
            except (RemoteError, *DB_ERRORS) as exc:
                # Unsettled messages come back after their visibility timeout.
                backoff = min(max(backoff * 2, 0.2), 10.0)
                self._log.warning("receive_failed", error=describe_error(exc), retry_in_s=backoff)
                await self._clock.sleep(backoff)
            except BaseException:
                # A crash or a stop: what this receive had not settled goes back at once.
                await self._hand_back(intake.unsettled)
                raise
            finally:
                self._inflight.unreserve(want - intake.kept)
                self.signals.polled.emit(intake.kept)

    async def _receive(self, want: int) -> list[Delivery]:
        options = self._options()
        received = await self._queue.receive(
            options.queue_url, want, options.wait_time_s, options.visibility_timeout_s
        )
        self.signals.received.emit(len(received))
        return received

    async def _hand_back(self, receipts: Collection[str]) -> None:
        """Messages this daemon will not handle after all: visible again at once."""
        if receipts:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._messages.set_visibility(list(receipts), 0))

    async def handle(self, received: Sequence[Delivery], intake: Intake | None = None) -> int:
        """Claim, hold or drop received messages, each on its own: a malformed one is deleted
        and the others go on. Returns how many reserved slots they keep (claimed tasks, and
        messages held in memory until run_at); ``intake`` follows them as they settle."""
        intake = Intake() if intake is None else intake
        intake.unsettled.update(m.receipt for m in received)
        wakeups: list[WakeUp] = []
        for message in received:
            if isinstance(message, Malformed):
                self._malformed(message)
                self._messages.discard(message.receipt)
                intake.settle([message.receipt])
                continue
            wakeups.append(message)
        return await self.dispatch(wakeups, intake) if wakeups else intake.kept

    def _malformed(self, message: Malformed) -> None:
        # Never the body: whatever sent it may have put anything in it.
        self._log.error(
            "message_malformed",
            reason=message.reason,
            message_id=message.message_id,
            body_chars=message.body_chars,
        )
        self._count("malformed")

    async def dispatch(self, wakeups: Sequence[WakeUp], intake: Intake | None = None) -> int:
        """Claim the tasks of parsed messages, hold early ones, drop stale ones, defer those
        of paused queues and queues at a limit; returns how many reserved slots they keep."""
        intake = Intake() if intake is None else intake
        intake.unsettled.update(w.receipt for w in wakeups)
        # One claim per task (duplicates in one batch: the others are spent).
        first: dict[uuid.UUID, WakeUp] = {}
        for w in wakeups:
            first.setdefault(w.task_id, w)
        plan = self._limiter.plan() if self._limiter is not None else NO_LIMITS
        claimed = await self._outbox.claim_messages(
            self._owner,
            [(w.task_id, w.series) for w in first.values()],
            self._lease_s(),
            plan.excluded,
        )
        self._started(claimed, first, intake)
        claimed_ids = {t.id for t in claimed}
        rest = [w for w in wakeups if w.task_id not in claimed_ids or first[w.task_id] is not w]
        if not rest:
            return intake.kept
        states = await self._outbox.message_tasks([w.task_id for w in rest])
        later, gated, deferred = self._sort(rest, states, first, plan, intake)
        deferred += await self._claim_gated(gated, plan, first, intake)
        if deferred:
            self._count("deferred", len(deferred))
            await self._outbox.deferred([w.task_id for w, _ in deferred])
            later.extend((w.receipt, seconds) for w, seconds in deferred)
        await self._messages.set_visibilities(later)
        intake.settle(receipt for receipt, _ in later)
        return intake.kept

    def _sort(
        self,
        rest: Sequence[WakeUp],
        states: dict[uuid.UUID, MessageTask],
        first: dict[uuid.UUID, WakeUp],
        plan: ClaimPlan,
        intake: Intake,
    ) -> tuple[list[tuple[str, int]], dict[str, list[WakeUp]], list[tuple[WakeUp, int]]]:
        """What becomes of the wake-ups not claimed: dropped (stale), held in process (due
        within moments), made invisible until shortly before they are due (``later``), left
        for a claim within a queue's limit (``gated``), or deferred (paused, at a limit, an
        action this daemon does not run)."""
        later: list[tuple[str, int]] = []  # early messages: invisible until ~1 s before
        gated: dict[str, list[WakeUp]] = {}  # due, in a queue with room under its limits
        deferred: list[tuple[WakeUp, int]] = []
        for w in rest:
            state = states.get(w.task_id)
            current = (
                state is not None
                and state.status is TaskStatus.SCHEDULED
                and state.version == w.series
                and first[w.task_id] is w
            )
            if not current or state is None:
                self._count("stale")
                self._messages.discard(w.receipt)
                intake.settle([w.receipt])
            elif not state.runnable:
                # This daemon cannot run the task's action: leave the wake-up to one that can
                # (it comes back here, or goes to another consumer, after a while).
                wait = max(math.floor(state.due_in_s - 1.0), UNRUNNABLE_RECHECK_S)
                deferred.append((w, min(wait, MAX_VISIBILITY_S)))
            elif state.due_in_s <= 0 and state.paused:
                deferred.append((w, PAUSED_RECHECK_S))
            elif state.due_in_s <= 0 and state.queue in plan.blocked:
                wait = math.ceil(plan.wake_in_s or 0.0)
                deferred.append((w, max(LIMITED_RECHECK_S, wait)))
            elif state.due_in_s <= 0 and state.queue in plan.limited:
                gated.setdefault(state.queue, []).append(w)
            elif state.due_in_s <= HOLD_IN_PROCESS_S:
                self._hold(w, state.due_in_s, intake)
            else:
                self._count("held")
                seconds = min(max(math.floor(state.due_in_s - 1.0), 1), MAX_VISIBILITY_S)
                later.append((w.receipt, seconds))
        return later, gated, deferred

    async def _claim_gated(
        self,
        gated: dict[str, list[WakeUp]],
        plan: ClaimPlan,
        first: dict[uuid.UUID, WakeUp],
        intake: Intake,
    ) -> list[tuple[WakeUp, int]]:
        """Claim the wake-ups of queues with a limit, within their room; the rest are
        deferred."""
        deferred: list[tuple[WakeUp, int]] = []
        for queue, waiting in gated.items():
            room = plan.limited[queue]
            got = await self._outbox.claim_queue_messages(
                self._owner,
                queue,
                [(w.task_id, w.series) for w in waiting],
                len(waiting) if room.room is None else min(room.room, len(waiting)),
                self._lease_s(),
                room.global_limit,
            )
            if self._limiter is not None:
                self._limiter.took(queue, len(got))
            self._started(got, first, intake)
            got_ids = {t.id for t in got}
            deferred.extend((w, LIMITED_RECHECK_S) for w in waiting if w.task_id not in got_ids)
        return deferred

    def _started(
        self, claimed: Sequence[ClaimedTask], first: dict[uuid.UUID, WakeUp], intake: Intake
    ) -> None:
        """Claimed tasks go to the executor at once, each keeping its reserved slot."""
        receipts = [first[task.id].receipt for task in claimed]
        for task, receipt in zip(claimed, receipts, strict=True):
            self._messages.track(task.id, receipt)
        admit(claimed, self._inflight, self._ready, self._log, reserved=True)
        intake.kept += len(claimed)
        intake.settle(receipts)
        if claimed:
            self.claimed_total += len(claimed)
            self._count("claimed", len(claimed))
            if self._metrics is not None:
                self._metrics.claimed(claimed)

    def _hold(self, wakeup: WakeUp, due_in_s: float, intake: Intake) -> None:
        """Keep the message (and its reserved slot) until run_at, then claim it."""
        self._count("held")
        self._held[wakeup.receipt] = wakeup
        intake.kept += 1
        intake.settle([wakeup.receipt])
        task = asyncio.ensure_future(self._claim_when_due(wakeup, due_in_s))
        self._holds.add(task)
        task.add_done_callback(self._holds.discard)

    async def _claim_when_due(self, wakeup: WakeUp, due_in_s: float) -> None:
        """A held message's claim at run_at; the slot it kept goes back unless its task
        started (or it is held again)."""
        intake = Intake()
        try:
            await self._clock.sleep(max(due_in_s, 0.0))
            if self._held.pop(wakeup.receipt, None) is None:
                return
            await self.dispatch([wakeup], intake)
        except (RemoteError, *DB_ERRORS) as exc:
            # Not lost: the message becomes visible again after its timeout.
            self._log.warning("held_claim_failed", task_id=str(wakeup.task_id), error=str(exc))
        except asyncio.CancelledError:
            await self._hand_back(intake.unsettled)
            raise
        except Exception:
            # No supervisor sees this task: logged here, and the message goes back at once.
            self._log.exception("held_claim_crashed", task_id=str(wakeup.task_id))
            await self._hand_back(intake.unsettled)
        finally:
            self._inflight.unreserve(1 - intake.kept)

    def _count(self, result: str, n: int = 1) -> None:
        if self._metrics is not None:
            self._metrics.sqs_messages.labels(result).inc(n)
